#include "vmm/jail.hpp"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "vmm/capabilities.hpp"
#include "vmm/run_in_child.hpp"
#include "vmm/sys_error.hpp"

namespace forkvm::vmm {
namespace {

// Where the new root is built, in our own mount namespace only: every host
// has /tmp, and what we mount over it there is invisible to everyone else.
constexpr const char* kNewRoot = "/tmp";
constexpr rlim_t kMaxFds = 256;  // a VM process holds ~20 (KVM, vCPUs, sockets, epoll)

void check(int rc, const std::string& what) {
    if (rc != 0) throw SysError(what, errno);
}

void set_limit(int resource, rlim_t value, const char* what) {
    rlimit r{value, value};
    check(::setrlimit(resource, &r), what);
}

// Builds an empty root (a read-only tmpfs) and moves into it. The machine
// is built already: guest memory is mapped, /dev/kvm and the sockets are
// open fds, so nothing in the process needs a path any more.
void pivot_into_empty_root() {
    check(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), "mount --make-rprivate /");
    check(::mount("forkvm-jail", kNewRoot, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "size=16k,nr_inodes=8,mode=0755"),
          "mount tmpfs for the jail root");
    const std::string old_root = std::string(kNewRoot) + "/.old-root";
    check(::mkdir(old_root.c_str(), 0700), "mkdir " + old_root);
    check(static_cast<int>(::syscall(SYS_pivot_root, kNewRoot, old_root.c_str())), "pivot_root");
    check(::chdir("/"), "chdir /");
    check(::umount2("/.old-root", MNT_DETACH), "umount the old root");
    check(::rmdir("/.old-root"), "rmdir /.old-root");
    check(::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  nullptr),
          "remount the jail root read-only");
}

}  // namespace

void enter_jail(const JailSettings& settings) {
    if (settings.uid == 0) throw SysError("jail: uid 0 is not allowed for a VM process", EINVAL);

    check(::unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS), "unshare namespaces");
    const char hostname[] = "forkvm-vmm";
    check(::sethostname(hostname, sizeof hostname - 1), "sethostname");
    pivot_into_empty_root();

    set_limit(RLIMIT_NOFILE, kMaxFds, "setrlimit RLIMIT_NOFILE");
    set_limit(RLIMIT_CORE, 0, "setrlimit RLIMIT_CORE");
    if (settings.max_file_bytes != 0) {
        set_limit(RLIMIT_FSIZE, static_cast<rlim_t>(settings.max_file_bytes), "setrlimit RLIMIT_FSIZE");
    }

    // Nothing this process or anything it could execute may ever hold again.
    limit_bounding_set(0);
    set_ambient_capabilities(0);
    const auto gid = static_cast<gid_t>(settings.uid);
    check(::setgroups(0, nullptr), "setgroups");
    check(::setresgid(gid, gid, gid), "setresgid");
    check(::setresuid(settings.uid, settings.uid, settings.uid), "setresuid");
    if (::getuid() == 0 || ::geteuid() == 0) throw SysError("jail: still uid 0 after setresuid", EPERM);
    // Leaving uid 0 cleared every capability; leaving a server.user that
    // kept some (docs/security.md) did not: clear them here.
    set_capabilities({});
    if (current_capabilities() != CapabilitySets{})
        throw SysError("jail: capabilities left after capset", EPERM);
    check(::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl PR_SET_NO_NEW_PRIVS");
    check(::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl PR_SET_DUMPABLE");
}

std::optional<std::string> jail_unavailable_reason() {
    try {
        if (::geteuid() != 0 && (current_capabilities().effective & kJailCapabilities) != kJailCapabilities) {
            return "the server runs neither as root nor with " + capability_names(kJailCapabilities) +
                   ", so it cannot give VM processes namespaces, an empty root and their own uid";
        }
        // Root is not enough in a container without CAP_SYS_ADMIN, or under
        // an LSM that forbids mounts: build a jail for real in a throwaway child.
        const ChildOutcome trial = run_in_child([](int) {
            enter_jail({.uid = 65534, .max_file_bytes = 0});
            return 0;
        });
        if (trial.exited(0)) return std::nullopt;
        return "a trial jail failed: " +
               (trial.output.empty() ? std::string("the trial process died") : trial.output);
    } catch (const std::exception& e) {
        return std::string("the trial jail could not be run: ") + e.what();
    }
}

}  // namespace forkvm::vmm
