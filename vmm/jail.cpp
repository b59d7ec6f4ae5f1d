#include "vmm/jail.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

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

void drop_capability_bounding_set() {
    for (int cap = 0; cap <= 63; ++cap) {
        if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
            if (errno == EINVAL) break;  // past the last capability this kernel knows
            throw SysError("prctl PR_CAPBSET_DROP", errno);
        }
    }
    (void)::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
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

    drop_capability_bounding_set();
    const auto gid = static_cast<gid_t>(settings.uid);
    check(::setgroups(0, nullptr), "setgroups");
    check(::setresgid(gid, gid, gid), "setresgid");
    check(::setresuid(settings.uid, settings.uid, settings.uid), "setresuid");  // clears every capability
    if (::getuid() == 0 || ::geteuid() == 0) throw SysError("jail: still uid 0 after setresuid", EPERM);
    check(::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl PR_SET_NO_NEW_PRIVS");
    check(::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl PR_SET_DUMPABLE");
}

std::optional<std::string> jail_unavailable_reason() {
    if (::geteuid() != 0) {
        return "the server does not run as root, so it cannot give VM processes namespaces, an empty root "
               "and their own uid";
    }
    // Root is not enough in a container without CAP_SYS_ADMIN, or under an
    // LSM that forbids mounts: build a jail for real in a throwaway child.
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return std::string("pipe: ") + std::strerror(errno);
    const pid_t pid = ::fork();
    if (pid < 0) {
        ::close(p[0]);
        ::close(p[1]);
        return std::string("fork: ") + std::strerror(errno);
    }
    if (pid == 0) {
        ::close(p[0]);
        try {
            enter_jail({.uid = 65534, .max_file_bytes = 0});
            ::_exit(0);
        } catch (const std::exception& e) {
            (void)!::write(p[1], e.what(), std::strlen(e.what()));
            ::_exit(1);
        }
    }
    ::close(p[1]);
    std::string message;
    char buf[256];
    ssize_t n = 0;
    while ((n = ::read(p[0], buf, sizeof buf)) > 0) message.append(buf, static_cast<std::size_t>(n));
    ::close(p[0]);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return std::nullopt;
    return "a trial jail failed: " + (message.empty() ? std::string("the trial process died") : message);
}

}  // namespace forkvm::vmm
