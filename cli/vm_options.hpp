#pragma once
// The options that several forkvm commands share: the VM's shape (as
// `forkvm run` takes it), the command to run in the guest, and how a VM
// process is started from this executable.

#include <cstdint>
#include <string>
#include <vector>

#include "cli/option_parser.hpp"
#include "config/config.hpp"
#include "vmm/vm_config.hpp"
#include "vmm/vm_process.hpp"

namespace forkvm::cli {

// Sets the build's default kernel and initramfs in `config` and registers
// --memory-mb, --vcpus, --kernel and --initrd.
void add_vm_options(OptionParser& parser, vmm::VmConfig& config);
// Reports every problem of `config` on stderr; false if there was one.
[[nodiscard]] bool check_vm_config(const OptionParser& parser, const vmm::VmConfig& config);

// A command run in the guest.
struct ExecOptions {
    std::uint32_t timeout_ms = 0;  // 0 = none
    std::string user;              // "" = the agent's unprivileged default
    std::vector<std::string> argv;
};

// Registers --timeout-ms and --user.
void add_exec_options(OptionParser& parser, ExecOptions& exec);

// Starting a VM process: re-run this executable as `forkvm vmm`, with the
// guest console copied to our stderr if `console`. Timeouts are generous:
// under the emulated KVM host a boot takes tens of seconds. VM processes are
// jailed with the default uid range and seccomp enforced when this process
// can jail them (root), else run unjailed (the CLI's own commands: `serve`
// refuses to start unjailed unless told to).
[[nodiscard]] vmm::SpawnOptions spawn_options(bool console);
[[nodiscard]] vmm::SpawnOptions spawn_options(bool console, const vmm::JailOptions& jail,
                                              const vmm::ResourceLimits& limits);
// The jail and cgroup settings of a configuration (`cgroups` as detected).
[[nodiscard]] vmm::JailOptions jail_options_from(const config::Config& c);
[[nodiscard]] vmm::ResourceLimits resource_limits_from(const config::Config& c,
                                                       std::shared_ptr<const vmm::CgroupHost> cgroups);

}  // namespace forkvm::cli
