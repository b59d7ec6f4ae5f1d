#include "cli/vm_options.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "cli/guest_defaults.hpp"
#include "vmm/jail.hpp"

namespace forkvm::cli {

void add_vm_options(OptionParser& parser, vmm::VmConfig& config) {
    config.kernel_path = default_kernel();
    config.initrd_path = default_initrd();
    parser.number("--memory-mb", config.memory_mb, 1ULL << 20);
    parser.number("--vcpus", config.vcpu_count, 1024);
    parser.text("--kernel", config.kernel_path);
    parser.text("--initrd", config.initrd_path);
    parser.value("--agent-channel", [&config, command = parser.command()](std::string_view v) {
        auto channel = vmm::agent_channel_from_string(v);
        if (!channel) {
            std::fprintf(stderr, "%s: --agent-channel: '%.*s' is not virtio or uart\n", command.c_str(),
                         static_cast<int>(v.size()), v.data());
            return false;
        }
        config.agent_channel = *channel;
        return true;
    });
}

bool check_vm_config(const OptionParser& parser, const vmm::VmConfig& config) {
    const auto problems = vmm::validate(config);
    for (const auto& p : problems) {
        std::fprintf(stderr, "%s: %s\n", parser.command().c_str(), p.to_string().c_str());
    }
    return problems.empty();
}

void add_exec_options(OptionParser& parser, ExecOptions& exec) {
    parser.number("--timeout-ms", exec.timeout_ms);
    parser.text("--user", exec.user);
}

vmm::SpawnOptions spawn_options(bool console, const vmm::JailOptions& jail,
                                const vmm::ResourceLimits& limits) {
    vmm::SpawnOptions spawn;
    spawn.forkvm_binary = self_binary();
    spawn.console_fd = console ? STDERR_FILENO : -1;
    spawn.boot_timeout = std::chrono::minutes(5);
    spawn.jail = jail;
    spawn.limits = limits;
    return spawn;
}

vmm::ResourceLimits resource_limits_from(const config::Config& c,
                                         std::shared_ptr<const vmm::CgroupHost> cgroups) {
    vmm::ResourceLimits limits;
    limits.cgroups = std::move(cgroups);
    limits.memory_overhead = c.jail.memory_overhead;
    limits.pids_max = static_cast<std::uint32_t>(c.jail.max_processes);
    limits.cpu_quota_percent = static_cast<std::uint32_t>(c.jail.cpu_quota_percent);
    return limits;
}

vmm::JailOptions jail_options_from(const config::Config& c) {
    vmm::JailOptions jail;
    jail.enabled = c.jail.enabled;
    jail.uid_base = static_cast<uid_t>(c.jail.uid_base);
    jail.uid_count = static_cast<std::uint32_t>(c.jail.uid_count);
    jail.seccomp = vmm::parse_seccomp_mode(c.jail.seccomp).value_or(vmm::SeccompMode::enforce);
    return jail;
}

vmm::SpawnOptions spawn_options(bool console) {
    vmm::JailOptions jail;
    jail.enabled = !vmm::jail_unavailable_reason().has_value();
    jail.uid_base = 1000000000;
    jail.uid_count = 1000000;
    jail.seccomp = vmm::SeccompMode::enforce;
    return spawn_options(console, jail, {});
}

}  // namespace forkvm::cli
