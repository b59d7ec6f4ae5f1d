#pragma once
// The jail of a VM process (docs/security.md).
//
// A VM process sets up its machine as root (opens /dev/kvm, maps the
// snapshot or loads the kernel), then calls enter_jail() before the guest
// runs a single instruction:
//   - new mount, network, IPC and UTS namespaces: no network devices, no
//     shared System V objects, its own hostname;
//   - pivot_root into an empty read-only tmpfs: no host file is reachable
//     by path; the snapshot is mapped already, and /dev/kvm and the sockets
//     are open fds (a fork child builds its VM with the inherited /dev/kvm
//     fd);
//   - an unprivileged uid and gid of its own, no supplementary group, no
//     capabilities (bounding set emptied), no_new_privs, not dumpable (no
//     ptrace, no /proc/<pid>/mem even for the same uid);
//   - rlimits: few fds, files no larger than a snapshot of this VM, no core.
// Fork children inherit all of it, uid included (docs/security.md says why
// and what keeps sibling clones apart).

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace forkvm::vmm {

struct JailSettings {
    uid_t uid = 0;                     // non-zero: the VM process's uid (and gid)
    std::uint64_t max_file_bytes = 0;  // RLIMIT_FSIZE; 0 = unlimited
};

// Throws SysError naming the step that failed.
void enter_jail(const JailSettings& settings);

// Why this process cannot jail VM processes (not root; in a container
// without CAP_SYS_ADMIN; mounts forbidden), or nullopt when it can. Builds a
// jail in a forked child to find out: call it while single-threaded.
[[nodiscard]] std::optional<std::string> jail_unavailable_reason();

}  // namespace forkvm::vmm
