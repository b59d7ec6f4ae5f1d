#pragma once
// A test hook of VM processes (control op "probe"): performs one action a
// jailed VM process must not be able to do, from inside the jail, as a
// guest that took over the VMM would. The kvm jail tests use it to check
// docs/security.md: each probe either fails (the result says how) or is a
// seccomp violation that ends the process with the reason reported.

#include <string>
#include <string_view>

namespace forkvm::vmm {

// Probes: "open_etc_passwd", "execve", "socket_inet", "ptrace",
// "unlisted_ioctl", "signal_controller". Returns what the call returned
// ("errno 2 (No such file or directory)", ...) when it was not fatal.
// Throws std::invalid_argument for an unknown probe.
std::string run_jail_probe(std::string_view probe);

}  // namespace forkvm::vmm
