#include "cli/vm_options.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdio>

#include "cli/guest_defaults.hpp"

namespace forkvm::cli {

void add_vm_options(OptionParser& parser, vmm::VmConfig& config) {
    config.kernel_path = default_kernel();
    config.initrd_path = default_initrd();
    parser.number("--memory-mb", config.memory_mb, 1ULL << 20);
    parser.number("--vcpus", config.vcpu_count, 1024);
    parser.text("--kernel", config.kernel_path);
    parser.text("--initrd", config.initrd_path);
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

vmm::SpawnOptions spawn_options(bool console) {
    vmm::SpawnOptions spawn;
    spawn.forkvm_binary = self_binary();
    spawn.console_fd = console ? STDERR_FILENO : -1;
    spawn.boot_timeout = std::chrono::minutes(5);
    return spawn;
}

}  // namespace forkvm::cli
