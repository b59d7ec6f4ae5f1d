// forkvm bench fork: how fast zero-copy forks of a restored zygote become
// usable, how that compares with restoring the snapshot, and how much host
// memory each clone really costs (DESIGN.md §1, "Measuring memory per clone").

#include <signal.h>
#include <sys/types.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "cli/bench_channel.hpp"
#include "cli/bench_cycles.hpp"
#include "cli/commands.hpp"
#include "cli/guest_session.hpp"
#include "cli/option_parser.hpp"
#include "cli/proc_memory.hpp"
#include "cli/stats.hpp"
#include "cli/subcommand.hpp"
#include "cli/vm_options.hpp"
#include "vmm/agent_client.hpp"
#include "vmm/agent_ready.hpp"
#include "vmm/vm_process.hpp"

namespace forkvm::cli {
namespace {

constexpr const char* kForkUsage =
    "usage: forkvm bench fork --snapshot DIR --count N [--restores K] [--hold-ms MS] [--json]\n"
    "\n"
    "Restores a paused zygote from DIR, forks it N times (clone-0 .. clone-N-1),\n"
    "pinging each clone's agent until it answers, and keeps every clone alive\n"
    "until the end. Then restores DIR K times (default min(N, 5)), each until its\n"
    "agent answers. Prints p50/p90/p99/max of the fork call, of fork to ready and\n"
    "of restore to ready, forks per second (N / wall time of the fork loop) and\n"
    "host memory per clone: (sum of Pss of the zygote and all clones - Pss of the\n"
    "zygote before forking) / N from /proc/PID/smaps_rollup, right after the last\n"
    "clone answered and 2 s later. Stops every VM and checks none is left.\n"
    "  --hold-ms MS  keep the zygote and clones alive MS more milliseconds after\n"
    "                measuring (to inspect them, or to kill this process as a test)\n"
    "  --json        print one JSON object with all the numbers instead\n"
    "Exits 0, 1 if a VM failed, 2 on bad usage.\n";

constexpr auto kSettle = std::chrono::seconds(2);

struct Clone {
    std::unique_ptr<vmm::VmProcess> vm;
    std::unique_ptr<vmm::AgentClient> agent;
};

struct MemorySample {
    std::uint64_t pss_sum_kb = 0;  // zygote + clones
    std::uint64_t rss_sum_kb = 0;
    double per_clone_kb = 0;
};

struct Results {
    std::string snapshot;
    std::size_t count = 0;
    std::size_t restores = 0;
    std::uint64_t hold_ms = 0;
    std::vector<double> fork_call_ms;
    std::vector<double> fork_to_ready_ms;
    std::vector<double> restore_to_ready_ms;
    double fork_loop_ms = 0;
    std::uint64_t zygote_pss_before_kb = 0;
    std::optional<MemorySample> after_ready;
    std::optional<MemorySample> after_settle;
    std::size_t processes_stopped = 0;
    std::size_t processes_left = 0;
};

ProcMemory memory_of(pid_t pid) {
    auto m = read_proc_memory(pid);
    if (!m) throw std::runtime_error("cannot read /proc/" + std::to_string(pid) + "/smaps_rollup");
    return *m;
}

MemorySample measure_memory(const vmm::VmProcess& zygote, const std::vector<Clone>& clones,
                            std::uint64_t zygote_pss_before_kb) {
    MemorySample s;
    auto add = [&s](pid_t pid) {
        const auto m = memory_of(pid);
        s.pss_sum_kb += m.pss_kb;
        s.rss_sum_kb += m.rss_kb;
    };
    add(zygote.pid());
    for (const auto& c : clones) add(c.vm->pid());
    s.per_clone_kb = (static_cast<double>(s.pss_sum_kb) - static_cast<double>(zygote_pss_before_kb)) /
                     static_cast<double>(clones.size());
    return s;
}

// Stops the VM and checks that its process is gone (reaped: not even a
// zombie is left), counting both in `r`.
void stop_and_count(vmm::VmProcess& vm, Results& r) {
    const pid_t pid = vm.pid();
    vm.stop(std::chrono::seconds(5));
    ++r.processes_stopped;
    if (::kill(pid, 0) == 0 || errno != ESRCH) ++r.processes_left;
}

void fork_phase(const std::string& dir, Results& r) {
    vmm::CloneOptions zygote_options;
    zygote_options.hostname = "zygote";
    zygote_options.paused = true;
    auto zygote = vmm::VmProcess::restore(dir, zygote_options, spawn_options(false));
    r.zygote_pss_before_kb = memory_of(zygote->pid()).pss_kb;

    std::vector<Clone> clones;
    clones.reserve(r.count);
    const Stopwatch loop;
    for (std::size_t i = 0; i < r.count; ++i) {
        vmm::CloneOptions options;
        options.hostname = "clone-" + std::to_string(i);
        const Stopwatch one;
        Clone c;
        try {
            c.vm = zygote->fork(options);
            r.fork_call_ms.push_back(one.elapsed_ms());
            c.agent = std::make_unique<vmm::AgentClient>(c.vm->take_agent_fd());
            vmm::ping_until_answer(*c.agent);
        } catch (const std::exception& e) {
            throw std::runtime_error(options.hostname + ": " + e.what());
        }
        r.fork_to_ready_ms.push_back(one.elapsed_ms());
        clones.push_back(std::move(c));
    }
    r.fork_loop_ms = loop.elapsed_ms();

    r.after_ready = measure_memory(*zygote, clones, r.zygote_pss_before_kb);
    std::this_thread::sleep_for(kSettle);
    r.after_settle = measure_memory(*zygote, clones, r.zygote_pss_before_kb);
    if (r.hold_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(r.hold_ms));

    for (auto& c : clones) {
        c.agent->close();
        stop_and_count(*c.vm, r);
    }
    stop_and_count(*zygote, r);
}

void restore_phase(const std::string& dir, Results& r) {
    for (std::size_t i = 0; i < r.restores; ++i) {
        vmm::CloneOptions options;
        options.hostname = "restore-" + std::to_string(i);
        const Stopwatch one;
        try {
            auto vm = vmm::VmProcess::restore(dir, options, spawn_options(false));
            vmm::AgentClient agent(vm->take_agent_fd());
            vmm::ping_until_answer(agent);
            r.restore_to_ready_ms.push_back(one.elapsed_ms());
            agent.close();
            stop_and_count(*vm, r);
        } catch (const std::exception& e) {
            throw std::runtime_error(options.hostname + ": " + e.what());
        }
    }
}

nlohmann::ordered_json summary_json(const std::vector<double>& samples) {
    auto s = summarize(samples);
    if (!s) return nullptr;
    return {{"count", s->count}, {"min", s->min}, {"mean", s->mean}, {"p50", s->p50},
            {"p90", s->p90},     {"p99", s->p99}, {"max", s->max}};
}

nlohmann::ordered_json memory_json(const std::optional<MemorySample>& m) {
    if (!m) return nullptr;
    return {{"pss_sum_kb", m->pss_sum_kb}, {"rss_sum_kb", m->rss_sum_kb}, {"per_clone_kb", m->per_clone_kb}};
}

double forks_per_second(const Results& r) {
    return r.fork_loop_ms > 0 ? static_cast<double>(r.count) * 1000.0 / r.fork_loop_ms : 0.0;
}

void print_json(const Results& r) {
    nlohmann::ordered_json j = {
        {"snapshot", r.snapshot},
        {"count", r.count},
        {"restores", r.restores},
        {"fork_call_ms", summary_json(r.fork_call_ms)},
        {"fork_to_ready_ms", summary_json(r.fork_to_ready_ms)},
        {"restore_to_ready_ms", summary_json(r.restore_to_ready_ms)},
        {"fork_loop_ms", r.fork_loop_ms},
        {"forks_per_second", forks_per_second(r)},
        {"memory",
         {{"method",
           "(sum of Pss of zygote and all clones - zygote Pss before forking) / count, "
           "from /proc/PID/smaps_rollup; page tables and KVM's are not in Pss"},
          {"zygote_pss_before_kb", r.zygote_pss_before_kb},
          {"after_ready", memory_json(r.after_ready)},
          {"after_2s", memory_json(r.after_settle)}}},
        {"processes_stopped", r.processes_stopped},
        {"processes_left", r.processes_left},
    };
    std::printf("%s\n", j.dump(2).c_str());
}

void print_summary(const char* name, const std::vector<double>& samples) {
    auto s = summarize(samples);
    if (!s) {
        std::printf("%-22s no samples\n", name);
        return;
    }
    std::printf("%-22s n=%-4zu p50 %8.1f  p90 %8.1f  p99 %8.1f  max %8.1f ms\n", name, s->count, s->p50,
                s->p90, s->p99, s->max);
}

void print_memory(const char* when, const std::optional<MemorySample>& m) {
    if (!m) return;
    std::printf("memory per clone %-12s %10.0f kB  (sum Pss %llu kB, sum Rss %llu kB)\n", when,
                m->per_clone_kb, static_cast<unsigned long long>(m->pss_sum_kb),
                static_cast<unsigned long long>(m->rss_sum_kb));
}

void print_text(const Results& r) {
    std::printf("forkvm bench fork: snapshot %s, %zu clones, %zu restores\n", r.snapshot.c_str(), r.count,
                r.restores);
    print_summary("fork call", r.fork_call_ms);
    print_summary("fork to ready", r.fork_to_ready_ms);
    print_summary("restore to ready", r.restore_to_ready_ms);
    std::printf("forks per second      %.2f  (%zu forks to ready in %.1f ms)\n", forks_per_second(r), r.count,
                r.fork_loop_ms);
    std::printf("zygote Pss before     %llu kB\n", static_cast<unsigned long long>(r.zygote_pss_before_kb));
    print_memory("(answered)", r.after_ready);
    print_memory("(2 s later)", r.after_settle);
    std::printf("  = (sum Pss of zygote + clones - zygote Pss before) / %zu, /proc/PID/smaps_rollup\n",
                r.count);
    std::printf("VM processes stopped  %zu, left running %zu\n", r.processes_stopped, r.processes_left);
}

int fork_bench(std::span<char*> args) {
    std::string dir;
    std::size_t count = 0;
    std::optional<std::size_t> restores;
    std::uint64_t hold_ms = 0;
    bool json = false;
    OptionParser parser("forkvm bench fork", kForkUsage);
    parser.text("--snapshot", dir);
    parser.number("--count", count, 100000);
    parser.number("--restores", restores, 100000);
    parser.number("--hold-ms", hold_ms, 24ULL * 3600 * 1000);
    parser.flag("--json", json);
    const auto parsed = parser.parse(args, 0);
    if (parsed.exit_status) return *parsed.exit_status;
    if (!parsed.rest.empty()) return parser.usage_error("unexpected argument '" + parsed.rest.front() + "'");
    if (dir.empty()) return parser.usage_error("--snapshot DIR is required");
    if (count == 0) return parser.usage_error("--count N (at least 1) is required");

    Results r;
    std::error_code ec;
    auto abs = std::filesystem::absolute(dir, ec);
    r.snapshot = ec ? dir : abs.lexically_normal().string();
    r.count = count;
    r.hold_ms = hold_ms;
    r.restores = restores.value_or(std::min<std::size_t>(count, 5));
    try {
        fork_phase(r.snapshot, r);
        restore_phase(r.snapshot, r);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "forkvm bench fork: %s\n", e.what());
        return 1;
    }
    if (json) {
        print_json(r);
    } else {
        print_text(r);
    }
    return r.processes_left == 0 ? 0 : 1;
}

constexpr Subcommand kSubcommands[] = {
    {"fork", "fork-to-ready and restore-to-ready latency, memory per clone", fork_bench},
    {"http", "create -> exec -> delete cycles through a server's REST API", bench_http},
    {"api", "the same cycles through the service in-process, without HTTP", bench_api},
    {"channel", "agent channel throughput, exec round trip and VM exits per 64 KiB", bench_channel},
};

}  // namespace

int bench(std::span<char*> args) { return dispatch("forkvm bench", kSubcommands, args); }

}  // namespace forkvm::cli
