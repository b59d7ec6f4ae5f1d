// forkvm run: boot one VM, run a command in it through the agent, stream its
// output to ours, exit with its status, shut the VM down.

#include <cstdio>
#include <exception>
#include <string>

#include "cli/commands.hpp"
#include "cli/guest_session.hpp"
#include "cli/option_parser.hpp"
#include "cli/stats.hpp"
#include "cli/vm_options.hpp"
#include "vmm/agent_client.hpp"
#include "vmm/vm_process.hpp"

namespace forkvm::cli {
namespace {

constexpr const char* kUsage =
    "usage: forkvm run [--memory-mb N] [--vcpus N] [--agent-channel virtio|uart] [--kernel PATH] [--initrd "
    "PATH]\n"
    "                  [--timeout-ms N] [--user NAME] [--console] [--profile] [--] CMD [ARGS...]\n"
    "\n"
    "Boots a microVM, runs CMD in it as the unprivileged guest user (or --user),\n"
    "copies its stdout and stderr to ours as they come, and exits with CMD's exit\n"
    "status (128+N if signal N killed it, 124 if --timeout-ms expired, 125 if the\n"
    "VM or its agent failed).\n"
    "  --console   show the guest kernel's console on stderr\n"
    "  --profile   print the time of each stage up to agent ready on stderr\n"
    "Defaults: kernel and initramfs from the build (FORKVM_KERNEL, FORKVM_INITRD\n"
    "override them), 256 MiB, 1 vCPU, no timeout.\n";

}  // namespace

int run(std::span<char*> args) {
    vmm::VmConfig config;
    ExecOptions exec;
    bool console = false;
    bool profile = false;
    OptionParser parser("forkvm run", kUsage);
    add_vm_options(parser, config);
    add_exec_options(parser, exec);
    parser.flag("--console", console);
    parser.flag("--profile", profile);
    auto parsed = parser.parse(args, 0);
    if (parsed.exit_status) return *parsed.exit_status;
    if (parsed.rest.empty()) return parser.usage_error("no command given");
    if (!check_vm_config(parser, config)) return 2;
    exec.argv = std::move(parsed.rest);

    const Stopwatch total;
    try {
        auto vm = vmm::VmProcess::spawn(config, spawn_options(console));
        const double t_spawned = total.elapsed_ms();

        vmm::AgentClient agent(vm->take_agent_fd());
        try {
            agent.wait_ready(std::chrono::minutes(5));
        } catch (const std::exception& e) {
            std::fprintf(stderr, "forkvm run: the guest agent did not come up: %s\n", e.what());
            report_vm_failure("forkvm run", *vm);
            return 125;
        }
        if (profile) {
            std::fprintf(stderr, "profile: VM process spawned, kernel and initramfs loaded: %8.1f ms\n",
                         t_spawned);
            std::fprintf(stderr, "profile: kernel boot to agent ready:                      %8.1f ms\n",
                         total.elapsed_ms() - t_spawned);
            std::fprintf(stderr, "profile: total to agent ready:                            %8.1f ms\n",
                         total.elapsed_ms());
        }

        const int status = exec_to_stdio("forkvm run", agent, *vm, exec);
        agent.close();
        vm->stop(std::chrono::seconds(5));
        return status;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "forkvm run: %s\n", e.what());
        return 125;
    }
}

}  // namespace forkvm::cli
