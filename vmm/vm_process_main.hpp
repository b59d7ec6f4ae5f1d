#pragma once
// The body of a VM process (`forkvm vmm ...`): boots one Machine, bridges its
// agent UART to the agent socket, keeps the console tail, and serves the
// control channel (vmm/control_protocol.hpp) until told to stop or until the
// controller goes away.

#include <sys/types.h>

#include "vmm/seccomp_filter.hpp"

namespace forkvm::vmm {

struct VmProcessArgs {
    int control_fd = -1;   // SOCK_SEQPACKET to the controller
    int agent_fd = -1;     // SOCK_STREAM carrying the agent channel
    int console_fd = -1;   // optional: live copy of the kernel console
    int kvm_fd = -1;       // optional: an open /dev/kvm to use instead of the node
    pid_t parent_pid = 0;  // the controller; we die with it
    uid_t jail_uid = 0;    // non-zero: enter the jail (vmm/jail.hpp) with this uid
    SeccompMode seccomp = SeccompMode::off;
};

// Returns the process exit status.
int run_vm_process(const VmProcessArgs& args);

}  // namespace forkvm::vmm
