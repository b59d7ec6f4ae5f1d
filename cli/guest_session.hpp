#pragma once
// Talking to a VM's guest from a forkvm command: waiting until its agent
// answers, running a command with its output streamed to ours, and telling
// the user what the VM was doing when that failed.

#include <chrono>
#include <string_view>

#include "cli/vm_options.hpp"
#include "vmm/agent_client.hpp"
#include "vmm/vm_process.hpp"

namespace forkvm::cli {

// Prints on stderr the VM's state and the tail of its console, as far as the
// VM process still answers; for after the agent failed.
void report_vm_failure(std::string_view command, vmm::VmProcess& vm);

// Runs exec.argv in the guest, copying its stdout and stderr to ours as they
// come. Returns the status forkvm exits with: the command's, 128+N if signal
// N killed it, 124 if exec.timeout_ms expired, 125 if the agent or the VM
// failed (those two reported on stderr).
int exec_to_stdio(std::string_view command, vmm::AgentClient& agent, vmm::VmProcess& vm,
                  const ExecOptions& exec);

}  // namespace forkvm::cli
