#include "cli/server_user.hpp"

#include <fcntl.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <vector>

#include "cli/guest_defaults.hpp"
#include "server/server_options.hpp"
#include "vmm/jail.hpp"
#include "vmm/sys_error.hpp"

namespace forkvm::cli {
namespace {

namespace fs = std::filesystem;

// What forkvm keeps under data_dir (cli/service_stack.cpp, server_options.cpp).
constexpr const char* kDataSubdirs[] = {"golden", "snapshots", "templates", "spool"};

// Gives `root` and everything under it to uid:gid, symlinks themselves
// rather than what they point to.
void chown_tree(const fs::path& root, uid_t uid, gid_t gid) {
    auto give = [&](const fs::path& p) {
        struct stat st {};
        if (::lstat(p.c_str(), &st) != 0) throw SysError("lstat " + p.string(), errno);
        if ((st.st_uid != uid || st.st_gid != gid) && ::lchown(p.c_str(), uid, gid) != 0)
            throw SysError("chown " + p.string(), errno);
    };
    give(root);
    for (const auto& entry : fs::recursive_directory_iterator(root)) give(entry.path());
}

// Whether this process has a single thread: the uid change below would
// otherwise leave other threads' capabilities behind.
bool single_threaded() {
    std::error_code ec;
    auto it = fs::directory_iterator("/proc/self/task", ec);
    return !ec && std::distance(it, fs::directory_iterator()) == 1;
}

// After the drop: what the server and its VM processes must still reach,
// checked now rather than as a failed golden boot minutes later.
void check_access(const ServerUser& user, const config::Config& c) {
    const std::vector<std::pair<std::string, int>> needed = {
        {self_binary(), X_OK},
        {c.vm.kernel.empty() ? default_kernel() : c.vm.kernel, R_OK},
        {c.vm.initrd.empty() ? default_initrd() : c.vm.initrd, R_OK},
        {c.data_dir, R_OK | W_OK | X_OK},
    };
    for (const auto& [path, mode] : needed) {
        if (::access(path.c_str(), mode) != 0) {
            throw ServerUserError(fmt::format("server.user {} (uid {}) cannot {} {}: {}", user.name, user.uid,
                                              mode == X_OK   ? "execute"
                                              : mode == R_OK ? "read"
                                                             : "write to",
                                              path, std::strerror(errno)));
        }
    }
}

}  // namespace

ServerUser resolve_server_user(const std::string& spec) {
    std::vector<char> buf(16384);
    passwd pw{};
    passwd* found = nullptr;
    const int rc = ::getpwnam_r(spec.c_str(), &pw, buf.data(), buf.size(), &found);
    if (rc == 0 && found != nullptr) return {spec, found->pw_uid, found->pw_gid};
    std::uint32_t uid = 0;
    const auto [end, ec] = std::from_chars(spec.data(), spec.data() + spec.size(), uid);
    if (spec.empty() || ec != std::errc() || end != spec.data() + spec.size()) {
        throw ServerUserError(fmt::format("server.user = {}: no such user", spec));
    }
    if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found) == 0 && found != nullptr)
        return {found->pw_name, found->pw_uid, found->pw_gid};
    return {spec, static_cast<uid_t>(uid), static_cast<gid_t>(uid)};
}

vmm::CapabilityMask server_capabilities(bool privileged_port) {
    vmm::CapabilityMask caps =
        vmm::kJailCapabilities | vmm::capability_bit(CAP_CHOWN) | vmm::capability_bit(CAP_KILL);
    if (privileged_port) caps |= vmm::capability_bit(CAP_NET_BIND_SERVICE);
    return caps;
}

UniqueFd become_server_user(const ServerUser& user, const config::Config& c, const vmm::CgroupHost& cgroups) {
    if (::geteuid() != 0) {
        throw ServerUserError(fmt::format(
            "server.user = {}: start forkvm serve as root; it drops to that user itself", user.name));
    }
    if (user.uid == 0) throw ServerUserError("server.user must not be root (uid 0)");
    const auto jail_first = static_cast<std::int64_t>(c.jail.uid_base);
    if (user.uid >= jail_first && user.uid < jail_first + c.jail.uid_count) {
        throw ServerUserError(
            fmt::format("server.user {} (uid {}) lies in the jail uid range [{}, {}): VM "
                        "processes must not share the server's uid",
                        user.name, user.uid, jail_first, jail_first + c.jail.uid_count));
    }
    if (!single_threaded())
        throw ServerUserError("server.user: the server must drop privileges before any thread starts");

    cgroups.delegate(user.uid, user.gid);
    // The data directory and what forkvm keeps in it; anything else an
    // operator put there is left alone (data_dir might be a shared folder).
    fs::create_directories(c.data_dir);
    if (::chown(c.data_dir.c_str(), user.uid, user.gid) != 0) throw SysError("chown " + c.data_dir, errno);
    for (const char* sub : kDataSubdirs) {
        const fs::path dir = fs::path(c.data_dir) / sub;
        if (fs::is_directory(fs::symlink_status(dir))) chown_tree(dir, user.uid, user.gid);
    }
    UniqueFd kvm(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
    if (!kvm) throw SysError("open /dev/kvm (for the VM processes of server.user " + user.name + ")", errno);

    const auto port = server::server_options_from(c).port;
    const bool privileged_port = port != 0 && port < 1024;
    vmm::become_user_keeping(user.uid, user.gid, server_capabilities(privileged_port),
                             vmm::kJailCapabilities);
    check_access(user, c);
    return kvm;
}

}  // namespace forkvm::cli
