#pragma once
// The sandbox cycle benchmark shared by `forkvm bench http` (through the
// REST API) and `forkvm bench api` (the same service in-process, no HTTP):
// each of C workers loops create -> exec `echo` (output checked) -> delete
// until the duration is up; latency per step and per cycle, throughput, and
// errors by kind are reported the same way for both.

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace forkvm::cli {

// One worker's way to the service. Each call returns "" on success or the
// kind of error ("503 capacity_exhausted", "transport: connection reset",
// "exec output mismatch"): the report counts errors by that string.
class CycleClient {
public:
    virtual ~CycleClient() = default;
    CycleClient() = default;
    CycleClient(const CycleClient&) = delete;
    CycleClient& operator=(const CycleClient&) = delete;

    virtual std::string create(std::string& id_out) = 0;
    virtual std::string exec_echo(const std::string& id, const std::string& word) = 0;
    virtual std::string remove(const std::string& id) = 0;
};

// Makes one client per worker (called on the worker's thread).
using CycleClientFactory = std::function<std::unique_ptr<CycleClient>()>;

struct CycleReport {
    std::string title;
    std::size_t concurrency = 0;
    double wall_seconds = 0;
    std::size_t cycles_ok = 0;
    std::vector<double> create_ms, exec_ms, delete_ms, cycle_ms;  // successful steps / cycles
    std::map<std::string, std::size_t> errors;                    // kind -> count
};

CycleReport run_cycles(const std::string& title, const CycleClientFactory& factory, std::size_t concurrency,
                       std::chrono::seconds duration);

void print_cycle_report(const CycleReport& report, bool json);

// The subcommands (cli/bench_cycles_cmd.cpp).
int bench_http(std::span<char*> args);
int bench_api(std::span<char*> args);

}  // namespace forkvm::cli
