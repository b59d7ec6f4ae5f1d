// forkvm snapshot create: boot a VM, wait for its agent, write its snapshot.
// forkvm snapshot run: restore a snapshot and run a command in it, as
// `forkvm run` does in a booted VM.

#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include "cli/commands.hpp"
#include "cli/guest_session.hpp"
#include "cli/option_parser.hpp"
#include "cli/stats.hpp"
#include "cli/subcommand.hpp"
#include "cli/vm_options.hpp"
#include "vmm/agent_client.hpp"
#include "vmm/agent_ready.hpp"
#include "vmm/vm_process.hpp"

namespace forkvm::cli {
namespace {

constexpr const char* kCreateUsage =
    "usage: forkvm snapshot create --out DIR [--memory-mb N] [--vcpus N] [--agent-channel virtio|uart] "
    "[--kernel PATH]\n"
    "                              [--initrd PATH] [--console]\n"
    "\n"
    "Boots a microVM, waits until its agent is ready, writes its snapshot into DIR\n"
    "(created if missing; an existing snapshot there is refused) and stops the VM.\n"
    "Prints the directory and the size of each file (memory.bin is sparse: its\n"
    "size on disk is what the guest touched). Exits 0, 1 on failure, 2 on bad usage.\n"
    "  --console   show the guest kernel's console on stderr\n"
    "VM defaults as forkvm run: the build's kernel and initramfs, 256 MiB, 1 vCPU.\n";

constexpr const char* kRunUsage =
    "usage: forkvm snapshot run DIR [--timeout-ms N] [--user NAME] [--hostname NAME]\n"
    "                           [--console] [--profile] [--] CMD [ARGS...]\n"
    "\n"
    "Restores the snapshot in DIR (with fresh entropy, the host's clock and its own\n"
    "hostname), runs CMD in it as forkvm run does, and stops the VM. Exits with\n"
    "CMD's status (128+N if signal N killed it, 124 if --timeout-ms expired, 125 if\n"
    "the VM or its agent failed), 1 if the snapshot cannot be restored (the message\n"
    "names the problem), 2 on bad usage.\n"
    "  --hostname  the clone's hostname (default vm-<pid of its VM process>)\n"
    "  --console   show the guest kernel's console on stderr\n"
    "  --profile   print the restore time and the time until the agent answers\n";

std::string human_bytes(std::uintmax_t bytes) {
    constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    auto v = static_cast<double>(bytes);
    std::size_t unit = 0;
    while (v >= 1024.0 && unit + 1 < std::size(kUnits)) {
        v /= 1024.0;
        ++unit;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, unit == 0 ? "%.0f %s" : "%.1f %s", v, kUnits[unit]);
    return buf;
}

// Each regular file of `dir` with its size and the space it takes on disk.
void print_sizes(const std::string& dir) {
    std::vector<std::filesystem::path> files;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
        if (entry.is_regular_file()) files.push_back(entry.path());
    }
    std::sort(files.begin(), files.end());
    std::uintmax_t total_size = 0;
    std::uintmax_t total_disk = 0;
    for (const auto& f : files) {
        struct stat st {};
        if (::stat(f.c_str(), &st) != 0) continue;
        const auto size = static_cast<std::uintmax_t>(st.st_size);
        const auto disk = static_cast<std::uintmax_t>(st.st_blocks) * 512;
        total_size += size;
        total_disk += disk;
        std::printf("  %-16s %12ju bytes  %10s  (on disk %s)\n", f.filename().c_str(), size,
                    human_bytes(size).c_str(), human_bytes(disk).c_str());
    }
    std::printf("  %-16s %12ju bytes  %10s  (on disk %s)\n", "total", total_size,
                human_bytes(total_size).c_str(), human_bytes(total_disk).c_str());
}

// The VM process may run in another directory one day: give it an absolute path.
std::string absolute_dir(const std::string& dir) {
    std::error_code ec;
    auto abs = std::filesystem::absolute(dir, ec);
    return ec ? dir : abs.lexically_normal().string();
}

int create(std::span<char*> args) {
    vmm::VmConfig config;
    std::string out;
    bool console = false;
    OptionParser parser("forkvm snapshot create", kCreateUsage);
    add_vm_options(parser, config);
    parser.text("--out", out);
    parser.flag("--console", console);
    const auto parsed = parser.parse(args, 0);
    if (parsed.exit_status) return *parsed.exit_status;
    if (!parsed.rest.empty()) return parser.usage_error("unexpected argument '" + parsed.rest.front() + "'");
    if (out.empty()) return parser.usage_error("--out DIR is required");
    if (!check_vm_config(parser, config)) return 2;
    out = absolute_dir(out);
    // The VM process refuses it too, but only after a boot of tens of seconds.
    if (std::error_code ec; std::filesystem::exists(std::filesystem::path(out) / "manifest.json", ec)) {
        std::fprintf(stderr, "forkvm snapshot create: %s already holds a snapshot (remove it first)\n",
                     out.c_str());
        return 1;
    }

    try {
        const Stopwatch total;
        auto vm = vmm::VmProcess::spawn(config, spawn_options(console));
        vmm::AgentClient agent(vm->take_agent_fd());
        try {
            agent.wait_ready(std::chrono::minutes(5));
        } catch (const std::exception& e) {
            std::fprintf(stderr, "forkvm snapshot create: the guest agent did not come up: %s\n", e.what());
            report_vm_failure("forkvm snapshot create", *vm);
            return 1;
        }
        const double t_ready = total.elapsed_ms();
        // The agent channel is idle now (Ready came, nothing asked): the
        // snapshot catches the agent waiting for its next request.
        vm->snapshot(out);
        const double t_snapshot = total.elapsed_ms() - t_ready;
        agent.close();
        vm->stop(std::chrono::seconds(5));
        std::printf("snapshot written to %s\n", out.c_str());
        print_sizes(out);
        std::printf("boot to agent ready %.1f ms, snapshot %.1f ms\n", t_ready, t_snapshot);
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "forkvm snapshot create: %s\n", e.what());
        return 1;
    }
}

int run_in_snapshot(std::span<char*> args) {
    ExecOptions exec;
    vmm::CloneOptions clone;
    bool console = false;
    bool profile = false;
    OptionParser parser("forkvm snapshot run", kRunUsage);
    add_exec_options(parser, exec);
    parser.text("--hostname", clone.hostname);
    parser.flag("--console", console);
    parser.flag("--profile", profile);
    auto parsed = parser.parse(args, 1);
    if (parsed.exit_status) return *parsed.exit_status;
    if (parsed.positionals.empty()) return parser.usage_error("no snapshot directory given");
    if (parsed.rest.empty()) return parser.usage_error("no command given");
    const std::string dir = absolute_dir(parsed.positionals.front());
    exec.argv = std::move(parsed.rest);

    const Stopwatch total;
    std::unique_ptr<vmm::VmProcess> vm;
    try {
        vm = vmm::VmProcess::restore(dir, clone, spawn_options(console));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "forkvm snapshot run: %s\n", e.what());
        return 1;
    }
    try {
        const double t_restored = total.elapsed_ms();
        vmm::AgentClient agent(vm->take_agent_fd());
        try {
            vmm::ping_until_answer(agent);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "forkvm snapshot run: the restored agent does not answer: %s\n", e.what());
            report_vm_failure("forkvm snapshot run", *vm);
            return 125;
        }
        if (profile) {
            std::fprintf(stderr, "profile: VM process spawned, snapshot restored: %8.1f ms\n", t_restored);
            std::fprintf(stderr, "profile: restored to agent answering a ping:  %8.1f ms\n",
                         total.elapsed_ms() - t_restored);
            std::fprintf(stderr, "profile: total to agent answering:            %8.1f ms\n",
                         total.elapsed_ms());
        }
        const int status = exec_to_stdio("forkvm snapshot run", agent, *vm, exec);
        agent.close();
        vm->stop(std::chrono::seconds(5));
        return status;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "forkvm snapshot run: %s\n", e.what());
        return 125;
    }
}

constexpr Subcommand kSubcommands[] = {
    {"create", "boot a VM and write its snapshot into a directory", create},
    {"run", "restore a snapshot and run a command in it", run_in_snapshot},
};

}  // namespace

int snapshot(std::span<char*> args) { return dispatch("forkvm snapshot", kSubcommands, args); }

}  // namespace forkvm::cli
