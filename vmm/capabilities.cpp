#include "vmm/capabilities.hpp"

#include <grp.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <tuple>
#include <utility>

#include "vmm/sys_error.hpp"

namespace forkvm::vmm {
namespace {

// The 64-bit sets travel as two 32-bit halves in version 3 of the ABI.
using CapData = std::array<__user_cap_data_struct, _LINUX_CAPABILITY_U32S_3>;

CapabilityMask join(std::uint32_t low, std::uint32_t high) {
    return (static_cast<CapabilityMask>(high) << 32) | low;
}

std::pair<std::uint32_t, std::uint32_t> split(CapabilityMask mask) {
    return {static_cast<std::uint32_t>(mask), static_cast<std::uint32_t>(mask >> 32)};
}

// The highest capability this kernel knows (CAP_LAST_CAP at its build).
int last_capability() {
    for (int cap = 63; cap >= 0; --cap) {
        if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0) return cap;
    }
    return CAP_LAST_CAP;
}

}  // namespace

CapabilitySets current_capabilities() {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    CapData data{};
    if (::syscall(SYS_capget, &header, data.data()) != 0) throw SysError("capget", errno);
    return {join(data[0].effective, data[1].effective), join(data[0].permitted, data[1].permitted),
            join(data[0].inheritable, data[1].inheritable)};
}

void set_capabilities(const CapabilitySets& sets) {
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    CapData data{};
    std::tie(data[0].effective, data[1].effective) = split(sets.effective);
    std::tie(data[0].permitted, data[1].permitted) = split(sets.permitted);
    std::tie(data[0].inheritable, data[1].inheritable) = split(sets.inheritable);
    if (::syscall(SYS_capset, &header, data.data()) != 0) throw SysError("capset", errno);
}

void set_ambient_capabilities(CapabilityMask mask) {
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0)
        throw SysError("prctl PR_CAP_AMBIENT_CLEAR_ALL", errno);
    for (int cap = 0; cap < 64; ++cap) {
        if ((mask & capability_bit(cap)) == 0) continue;
        if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0)
            throw SysError("prctl PR_CAP_AMBIENT_RAISE " + capability_names(capability_bit(cap)), errno);
    }
}

CapabilityMask ambient_capabilities() {
    CapabilityMask mask = 0;
    const int last = last_capability();
    for (int cap = 0; cap <= last; ++cap) {
        const int set = ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, cap, 0, 0);
        if (set < 0) throw SysError("prctl PR_CAP_AMBIENT_IS_SET", errno);
        if (set == 1) mask |= capability_bit(cap);
    }
    return mask;
}

void limit_bounding_set(CapabilityMask keep) {
    const int last = last_capability();
    for (int cap = 0; cap <= last; ++cap) {
        if ((keep & capability_bit(cap)) != 0 || ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1) continue;
        if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) throw SysError("prctl PR_CAPBSET_DROP", errno);
    }
}

void become_user_keeping(uid_t uid, gid_t gid, CapabilityMask keep, CapabilityMask ambient) {
    if ((ambient & ~keep) != 0)
        throw SysError("become_user_keeping: ambient must be a subset of keep", EINVAL);
    limit_bounding_set(keep);  // while root: dropping needs CAP_SETPCAP, which `keep` may lack
    // Without KEEPCAPS, leaving uid 0 empties the permitted set.
    if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) throw SysError("prctl PR_SET_KEEPCAPS", errno);
    if (::setgroups(0, nullptr) != 0) throw SysError("setgroups", errno);
    if (::setresgid(gid, gid, gid) != 0) throw SysError("setresgid", errno);
    if (::setresuid(uid, uid, uid) != 0) throw SysError("setresuid", errno);
    (void)::prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
    set_capabilities({.effective = keep, .permitted = keep, .inheritable = ambient});
    set_ambient_capabilities(ambient);
    const CapabilitySets now = current_capabilities();
    if (now.permitted != keep || now.effective != keep) {
        throw SysError("become_user_keeping: holding " + capability_names(now.permitted) + " instead of " +
                           capability_names(keep),
                       EPERM);
    }
}

std::string capability_names(CapabilityMask mask) {
    // The ones forkvm deals with by name; the rest by number.
    static constexpr std::array<std::pair<int, const char*>, 8> kNames{{
        {CAP_CHOWN, "CAP_CHOWN"},
        {CAP_KILL, "CAP_KILL"},
        {CAP_SETGID, "CAP_SETGID"},
        {CAP_SETUID, "CAP_SETUID"},
        {CAP_SETPCAP, "CAP_SETPCAP"},
        {CAP_NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE"},
        {CAP_SYS_ADMIN, "CAP_SYS_ADMIN"},
        {CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"},
    }};
    std::string text;
    for (int cap = 0; cap < 64; ++cap) {
        if ((mask & capability_bit(cap)) == 0) continue;
        std::string name = "cap_" + std::to_string(cap);
        for (const auto& [number, known] : kNames)
            if (number == cap) name = known;
        text += (text.empty() ? "" : ", ") + name;
    }
    return text.empty() ? "none" : text;
}

}  // namespace forkvm::vmm
