#include "cli/bench_cycles.hpp"

#include <atomic>
#include <cstdio>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "cli/stats.hpp"

namespace forkvm::cli {

namespace {

struct WorkerResult {
    std::vector<double> create_ms, exec_ms, delete_ms, cycle_ms;
    std::map<std::string, std::size_t> errors;
    std::size_t ok = 0;
};

void worker(const CycleClientFactory& factory, std::chrono::steady_clock::time_point until, std::size_t index,
            WorkerResult& out) {
    std::unique_ptr<CycleClient> client;
    try {
        client = factory();
    } catch (const std::exception& e) {
        ++out.errors[std::string("client: ") + e.what()];
        return;
    }
    for (std::size_t n = 0; std::chrono::steady_clock::now() < until; ++n) {
        const std::string word = "bench-" + std::to_string(index) + "-" + std::to_string(n);
        Stopwatch cycle;
        Stopwatch step;
        std::string id;
        std::string error = client->create(id);
        if (!error.empty()) {
            ++out.errors["create: " + error];
            // A server that is down or refusing: do not spin on it.
            if (error.starts_with("transport:")) std::this_thread::sleep_for(std::chrono::milliseconds(50));
            continue;
        }
        out.create_ms.push_back(step.elapsed_ms());
        step.restart();
        error = client->exec_echo(id, word);
        const bool exec_ok = error.empty();
        if (exec_ok) {
            out.exec_ms.push_back(step.elapsed_ms());
        } else {
            ++out.errors["exec: " + error];
        }
        step.restart();
        error = client->remove(id);  // also after a failed exec: leave nothing behind
        if (!error.empty()) {
            ++out.errors["delete: " + error];
            continue;
        }
        out.delete_ms.push_back(step.elapsed_ms());
        if (exec_ok) {
            out.cycle_ms.push_back(cycle.elapsed_ms());
            ++out.ok;
        }
    }
}

nlohmann::ordered_json summary_json(const std::vector<double>& samples) {
    const auto s = summarize(samples);
    if (!s) return nullptr;
    return {{"count", s->count}, {"p50", s->p50}, {"p90", s->p90}, {"p99", s->p99}, {"max", s->max}};
}

void print_row(const char* name, const std::vector<double>& samples) {
    const auto s = summarize(samples);
    if (!s) {
        std::printf("  %-8s %8s\n", name, "-");
        return;
    }
    std::printf("  %-8s %8zu %9.1f %9.1f %9.1f %9.1f\n", name, s->count, s->p50, s->p90, s->p99, s->max);
}

}  // namespace

CycleReport run_cycles(const std::string& title, const CycleClientFactory& factory, std::size_t concurrency,
                       std::chrono::seconds duration) {
    std::vector<WorkerResult> results(concurrency);
    const auto until = std::chrono::steady_clock::now() + duration;
    Stopwatch wall;
    std::vector<std::thread> threads;
    threads.reserve(concurrency);
    for (std::size_t i = 0; i < concurrency; ++i) {
        threads.emplace_back([&, i] { worker(factory, until, i, results[i]); });
    }
    for (auto& t : threads) t.join();
    CycleReport report;
    report.title = title;
    report.concurrency = concurrency;
    report.wall_seconds = wall.elapsed_ms() / 1000.0;
    for (auto& r : results) {
        const auto append = [](std::vector<double>& to, const std::vector<double>& from) {
            to.insert(to.end(), from.begin(), from.end());
        };
        append(report.create_ms, r.create_ms);
        append(report.exec_ms, r.exec_ms);
        append(report.delete_ms, r.delete_ms);
        append(report.cycle_ms, r.cycle_ms);
        for (const auto& [kind, count] : r.errors) report.errors[kind] += count;
        report.cycles_ok += r.ok;
    }
    return report;
}

void print_cycle_report(const CycleReport& report, bool json) {
    const double per_second =
        report.wall_seconds > 0 ? static_cast<double>(report.cycles_ok) / report.wall_seconds : 0;
    if (json) {
        nlohmann::ordered_json j = {{"title", report.title},
                                    {"concurrency", report.concurrency},
                                    {"wall_seconds", report.wall_seconds},
                                    {"cycles_ok", report.cycles_ok},
                                    {"cycles_per_second", per_second},
                                    {"create_ms", summary_json(report.create_ms)},
                                    {"exec_ms", summary_json(report.exec_ms)},
                                    {"delete_ms", summary_json(report.delete_ms)},
                                    {"cycle_ms", summary_json(report.cycle_ms)},
                                    {"errors", report.errors}};
        std::printf("%s\n", j.dump(2).c_str());
        return;
    }
    std::printf("%s: %zu workers, %.1f s: %zu cycles ok, %.2f cycles/s\n", report.title.c_str(),
                report.concurrency, report.wall_seconds, report.cycles_ok, per_second);
    std::printf("  %-8s %8s %9s %9s %9s %9s   (ms)\n", "step", "count", "p50", "p90", "p99", "max");
    print_row("create", report.create_ms);
    print_row("exec", report.exec_ms);
    print_row("delete", report.delete_ms);
    print_row("cycle", report.cycle_ms);
    if (report.errors.empty()) {
        std::printf("  errors: none\n");
    } else {
        for (const auto& [kind, count] : report.errors)
            std::printf("  errors: %zu x %s\n", count, kind.c_str());
    }
}

}  // namespace forkvm::cli
