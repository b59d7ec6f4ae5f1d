#pragma once
// Seccomp allowlists for VM processes, one per thread role.
//
// A VM process runs guest code; our threat model (docs/security.md) assumes
// a guest may take over the VMM through a device bug. The filters leave such
// a process only the system calls the VMM really makes, with `ioctl` limited
// to the KVM requests it uses, `clone` to new threads and the sibling fork
// (vmm/sibling_fork.hpp), and `tgkill` to the vCPU kick signal.
//
// Installed after set-up and before the first KVM_RUN: the control thread's
// filter first (every later thread inherits it), then each vCPU thread adds
// the narrower vCPU filter on itself (filters stack: a call must pass all).
//
// A call outside the list raises SIGSYS (SECCOMP_RET_TRAP); our handler
// writes a "stopped" event naming the call on the control socket and exits
// the process, so the controller reports the VM broken with the reason. A
// process that replaced the handler only loses the call: the kernel never
// runs it either way. In `log` mode the kernel runs the call and logs it
// (audit type 1326 in the kernel log): the way to find calls the list lacks.

#include <linux/filter.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forkvm::vmm {

enum class SeccompMode { off, log, enforce };

[[nodiscard]] std::optional<SeccompMode> parse_seccomp_mode(std::string_view text);
[[nodiscard]] std::string_view seccomp_mode_name(SeccompMode mode);

enum class ThreadRole {
    control,  // the VM process's main thread: control socket, snapshots, fork
    vcpu,     // a vCPU thread: KVM_RUN and device emulation
};

// The BPF program for `role` (exposed for tests).
[[nodiscard]] std::vector<sock_filter> seccomp_program(ThreadRole role, SeccompMode mode);

// Where the SIGSYS handler reports a violation (a SOCK_SEQPACKET control
// socket, or any fd for tests) and how it exits. Call before installing.
void set_seccomp_report_fd(int fd);

// Sets no_new_privs and installs the filter for `role` on the calling thread
// (nothing for SeccompMode::off). Throws SysError.
void install_seccomp(ThreadRole role, SeccompMode mode);

// The mode vCPU threads apply to themselves when they start (process-wide:
// set by the VM process once its control filter is in place).
void set_vcpu_thread_seccomp(SeccompMode mode);
// Called first thing on every vCPU thread.
void apply_vcpu_thread_seccomp();

// The exit status of a process ended by a seccomp violation.
constexpr int kSeccompViolationExit = 159;  // 128 + SIGSYS

// A system call's name for messages ("socket"), or "" when unknown.
[[nodiscard]] std::string_view syscall_name(long nr);

}  // namespace forkvm::vmm
