#pragma once
// The jail of a VM process (docs/security.md).
//
// A VM process sets up its machine with its controller's privileges (root,
// or server.user with kJailCapabilities; opens /dev/kvm, maps the
// snapshot or loads the kernel), then calls enter_jail() before the guest
// runs a single instruction:
//   - new mount, network, IPC and UTS namespaces: no network devices, no
//     shared System V objects, its own hostname;
//   - pivot_root into an empty read-only tmpfs: no host file is reachable
//     by path; the snapshot is mapped already, and /dev/kvm and the sockets
//     are open fds (a fork child builds its VM with the inherited /dev/kvm
//     fd);
//   - an unprivileged uid and gid of its own, no supplementary group, no
//     capabilities (every set cleared, the bounding set too), no_new_privs, not dumpable (no
//     ptrace, no /proc/<pid>/mem even for the same uid);
//   - rlimits: few fds, files no larger than a snapshot of this VM, no core.
// Fork children inherit all of it, uid included (docs/security.md says why
// and what keeps sibling clones apart).

#include <linux/capability.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

#include "vmm/capabilities.hpp"

namespace forkvm::vmm {

// What a process needs to jail another one it starts (the ambient set
// `forkvm serve` keeps as server.user): namespaces and mounts, the VM's uid
// and gid, emptying the bounding set.
inline constexpr CapabilityMask kJailCapabilities = capability_bit(CAP_SYS_ADMIN) |
                                                    capability_bit(CAP_SETUID) | capability_bit(CAP_SETGID) |
                                                    capability_bit(CAP_SETPCAP);

struct JailSettings {
    uid_t uid = 0;                     // non-zero: the VM process's uid (and gid)
    std::uint64_t max_file_bytes = 0;  // RLIMIT_FSIZE; 0 = unlimited
};

// Throws SysError naming the step that failed.
void enter_jail(const JailSettings& settings);

// Why this process cannot jail VM processes (neither root nor holding
// kJailCapabilities; in a container
// without CAP_SYS_ADMIN; mounts forbidden), or nullopt when it can. Builds a
// jail in a forked child to find out: call it while single-threaded.
[[nodiscard]] std::optional<std::string> jail_unavailable_reason();

}  // namespace forkvm::vmm
