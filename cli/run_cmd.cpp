// forkvm run: boot one VM, run a command in it through the agent, stream its
// output to ours, exit with its status, shut the VM down.

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "cli/commands.hpp"
#include "cli/guest_defaults.hpp"
#include "vmm/agent_client.hpp"
#include "vmm/vm_process.hpp"

namespace forkvm::cli {
namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kUsage =
    "usage: forkvm run [--memory-mb N] [--vcpus N] [--kernel PATH] [--initrd PATH]\n"
    "                  [--timeout-ms N] [--user NAME] [--console] [--profile] [--] CMD [ARGS...]\n"
    "\n"
    "Boots a microVM, runs CMD in it as the unprivileged guest user (or --user),\n"
    "copies its stdout and stderr to ours as they come, and exits with CMD's exit\n"
    "status (128+N if signal N killed it, 124 if --timeout-ms expired).\n"
    "  --console   show the guest kernel's console on stderr\n"
    "  --profile   print the time of each stage up to agent ready on stderr\n"
    "Defaults: kernel and initramfs from the build (FORKVM_KERNEL, FORKVM_INITRD\n"
    "override them), 256 MiB, 1 vCPU, no timeout.\n";

struct RunOptions {
    vmm::VmConfig vm;
    std::uint32_t timeout_ms = 0;
    std::string user;
    bool console = false;
    bool profile = false;
    std::vector<std::string> argv;
};

std::optional<std::uint64_t> parse_u64(std::string_view text) {
    if (text.empty() || text.size() > 19) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        v = v * 10 + static_cast<std::uint64_t>(c - '0');
    }
    return v;
}

// Returns an exit status to end with, or nullopt to go on.
std::optional<int> parse(std::span<char*> args, RunOptions& o) {
    o.vm.kernel_path = default_kernel();
    o.vm.initrd_path = default_initrd();
    std::size_t i = 0;
    auto value = [&](std::string_view flag) -> std::optional<std::string_view> {
        if (i + 1 >= args.size()) {
            std::fprintf(stderr, "forkvm run: %.*s needs a value\n", static_cast<int>(flag.size()),
                         flag.data());
            return std::nullopt;
        }
        return std::string_view(args[++i]);
    };
    auto number = [&](std::string_view flag, std::uint64_t max) -> std::optional<std::uint64_t> {
        auto v = value(flag);
        if (!v) return std::nullopt;
        auto n = parse_u64(*v);
        if (!n || *n > max) {
            std::fprintf(stderr, "forkvm run: %.*s: '%.*s' is not a number in 0..%llu\n",
                         static_cast<int>(flag.size()), flag.data(), static_cast<int>(v->size()), v->data(),
                         static_cast<unsigned long long>(max));
            return std::nullopt;
        }
        return n;
    };
    for (; i < args.size(); ++i) {
        std::string_view a = args[i];
        if (a == "--") {
            ++i;
            break;
        }
        if (a.empty() || a[0] != '-') break;
        if (a == "-h" || a == "--help") {
            std::fputs(kUsage, stdout);
            return 0;
        } else if (a == "--memory-mb") {
            auto n = number(a, 1ULL << 20);
            if (!n) return 2;
            o.vm.memory_mb = *n;
        } else if (a == "--vcpus") {
            auto n = number(a, 1024);
            if (!n) return 2;
            o.vm.vcpu_count = static_cast<unsigned>(*n);
        } else if (a == "--timeout-ms") {
            auto n = number(a, 0xffffffffULL);
            if (!n) return 2;
            o.timeout_ms = static_cast<std::uint32_t>(*n);
        } else if (a == "--kernel" || a == "--initrd" || a == "--user") {
            auto v = value(a);
            if (!v) return 2;
            (a == "--kernel"   ? o.vm.kernel_path
             : a == "--initrd" ? o.vm.initrd_path
                               : o.user) = std::string(*v);
        } else if (a == "--console") {
            o.console = true;
        } else if (a == "--profile") {
            o.profile = true;
        } else {
            std::fprintf(stderr, "forkvm run: unknown option %.*s\n%s", static_cast<int>(a.size()), a.data(),
                         kUsage);
            return 2;
        }
    }
    for (; i < args.size(); ++i) o.argv.emplace_back(args[i]);
    if (o.argv.empty()) {
        std::fprintf(stderr, "forkvm run: no command given\n%s", kUsage);
        return 2;
    }
    if (auto problems = vmm::validate(o.vm); !problems.empty()) {
        for (const auto& p : problems) std::fprintf(stderr, "forkvm run: %s\n", p.to_string().c_str());
        return 2;
    }
    return std::nullopt;
}

void write_all(int fd, vmm::ByteView data) {
    std::size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // our reader went away: drop the rest
        done += static_cast<std::size_t>(n);
    }
}

double ms_since(Clock::time_point t) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

int run(std::span<char*> args) {
    RunOptions o;
    if (auto status = parse(args, o)) return *status;

    const auto t0 = Clock::now();
    try {
        vmm::SpawnOptions spawn;
        spawn.forkvm_binary = self_binary();
        spawn.console_fd = o.console ? STDERR_FILENO : -1;
        // Generous: under the emulated KVM host a boot takes tens of seconds.
        spawn.boot_timeout = std::chrono::minutes(5);
        auto vm = vmm::VmProcess::spawn(o.vm, spawn);
        const double t_spawned = ms_since(t0);

        vmm::AgentClient agent(vm->take_agent_fd());
        try {
            agent.wait_ready(std::chrono::minutes(5));
        } catch (const std::exception& e) {
            std::fprintf(stderr, "forkvm run: the guest agent did not come up: %s\n", e.what());
            std::fprintf(stderr, "--- guest console (tail):\n%s\n", vm->console_tail(8192).c_str());
            return 125;
        }
        if (o.profile) {
            std::fprintf(stderr, "profile: VM process spawned, kernel and initramfs loaded: %8.1f ms\n",
                         t_spawned);
            std::fprintf(stderr, "profile: kernel boot to agent ready:                      %8.1f ms\n",
                         ms_since(t0) - t_spawned);
            std::fprintf(stderr, "profile: total to agent ready:                            %8.1f ms\n",
                         ms_since(t0));
        }

        vmm::ExecRequest req;
        req.argv = o.argv;
        req.user = o.user;
        req.timeout_ms = o.timeout_ms;
        req.stdout_cap = req.stderr_cap = 1ULL << 40;  // streamed, so no practical cap
        vmm::ExecCallbacks cb;
        cb.on_stdout = [](vmm::ByteView d) { write_all(STDOUT_FILENO, d); };
        cb.on_stderr = [](vmm::ByteView d) { write_all(STDERR_FILENO, d); };
        vmm::Deadline deadline =
            o.timeout_ms > 0
                ? vmm::Deadline(std::chrono::milliseconds(o.timeout_ms) + std::chrono::minutes(1))
                : vmm::Deadline(std::chrono::hours(24 * 365));
        vmm::ExecResult r{};
        try {
            r = agent.exec(req, cb, deadline);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "forkvm run: %s\n", e.what());
            try {
                auto st = vm->status();
                std::fprintf(stderr, "forkvm run: VM %s%s%s; unhandled I/O %llu; agent bytes dropped %llu\n",
                             st.state.c_str(), st.reason.empty() ? "" : ": ", st.reason.c_str(),
                             static_cast<unsigned long long>(st.unhandled_io),
                             static_cast<unsigned long long>(st.agent_dropped_bytes));
                std::fprintf(stderr, "--- guest console (tail):\n%s\n", vm->console_tail(4096).c_str());
            } catch (const std::exception&) {
                // The VM process is gone too: nothing more to tell.
            }
            return 125;
        }
        agent.close();
        vm->stop(std::chrono::seconds(5));
        if (r.timed_out) {
            std::fprintf(stderr, "forkvm run: command timed out after %u ms\n", o.timeout_ms);
            return 124;
        }
        if (r.term_signal != 0) return 128 + r.term_signal;
        return r.exit_code;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "forkvm run: %s\n", e.what());
        return 125;
    }
}

}  // namespace forkvm::cli
