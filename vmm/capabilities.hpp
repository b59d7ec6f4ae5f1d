#pragma once
// Capability sets of the calling thread, by the raw capget/capset calls (no
// libcap): `forkvm serve` keeps a few when it drops to server.user, and a VM
// process's jail clears them all. Capabilities are per thread: change them
// while the process has one thread.

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace forkvm::vmm {

using CapabilityMask = std::uint64_t;

[[nodiscard]] constexpr CapabilityMask capability_bit(int capability) noexcept {
    return CapabilityMask{1} << capability;
}

struct CapabilitySets {
    CapabilityMask effective = 0;
    CapabilityMask permitted = 0;
    CapabilityMask inheritable = 0;
    friend bool operator==(const CapabilitySets&, const CapabilitySets&) = default;
};

// Throw SysError.
[[nodiscard]] CapabilitySets current_capabilities();
void set_capabilities(const CapabilitySets& sets);
// Makes the ambient set exactly `mask` (each one must be permitted and
// inheritable): what a program this process executes starts with.
void set_ambient_capabilities(CapabilityMask mask);
[[nodiscard]] CapabilityMask ambient_capabilities();
// Drops every capability outside `keep` from the bounding set (needs
// CAP_SETPCAP unless nothing is left to drop).
void limit_bounding_set(CapabilityMask keep);

// Becomes uid:gid, with no supplementary groups, keeping `keep` effective
// and permitted, `ambient` (a subset of `keep`) inheritable and ambient,
// and nothing outside `keep` in the bounding set. For a root process with
// one thread (setresuid would change every thread, capset only this one).
// Throws SysError; the process is then in an unknown state and must exit.
void become_user_keeping(uid_t uid, gid_t gid, CapabilityMask keep, CapabilityMask ambient);

// "CAP_CHOWN, CAP_KILL" for a log line; unknown ones as "cap_<n>".
[[nodiscard]] std::string capability_names(CapabilityMask mask);

}  // namespace forkvm::vmm
