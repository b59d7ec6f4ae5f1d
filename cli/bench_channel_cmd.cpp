// forkvm bench channel: boots one VM whose agent talks on the chosen device
// and measures what the agent channel costs: upload and download throughput
// (write_file / read_file of --bytes, --rounds times each), the round trip
// of an exec of `true` (--execs times), and how many device exits (port I/O
// and MMIO exits to the VMM, read from the VM process) one 64 KiB transfer
// each way and one exec cost.

#include <cstdio>
#include <exception>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "cli/bench_channel.hpp"
#include "cli/guest_session.hpp"
#include "cli/option_parser.hpp"
#include "cli/stats.hpp"
#include "cli/vm_options.hpp"
#include "vmm/agent_client.hpp"
#include "vmm/vm_process.hpp"

namespace forkvm::cli {
namespace {

constexpr const char* kUsage =
    "usage: forkvm bench channel [--agent-channel virtio|uart] [--bytes N] [--rounds N] [--execs N]\n"
    "                            [--memory-mb N] [--kernel PATH] [--initrd PATH] [--json]\n"
    "\n"
    "Boots a microVM whose agent talks on the chosen device (default virtio) and\n"
    "measures the agent channel: MB/s of writing a file of N bytes into the guest\n"
    "(upload) and reading it back (download), each --rounds times (default 5); the\n"
    "round trip of an exec of `true`, --execs times (default 20); and the device\n"
    "exits (KVM_EXIT_IO + KVM_EXIT_MMIO, counted by the VM process) of one 64 KiB\n"
    "upload, one 64 KiB download and one exec. Prints p50/p90/max (or --json).\n"
    "Exits 0, 1 if the VM failed, 2 on bad usage.\n";

constexpr std::size_t k64KiB = 64 * 1024;
constexpr auto kDeadline = std::chrono::minutes(5);

struct Exits {
    std::uint64_t io = 0;
    std::uint64_t mmio = 0;
};

Exits exits_of(vmm::VmProcess& vm) {
    const auto s = vm.status();
    return {s.io_exits, s.mmio_exits};
}

// The device exits `op` costs (other devices are quiet meanwhile: the guest
// is idle apart from the agent).
template <typename Op>
Exits exits_during(vmm::VmProcess& vm, Op op) {
    const Exits before = exits_of(vm);
    op();
    const Exits after = exits_of(vm);
    return {after.io - before.io, after.mmio - before.mmio};
}

std::vector<std::uint8_t> random_bytes(std::size_t n) {
    std::vector<std::uint8_t> v(n);
    std::mt19937_64 rng(7);
    for (auto& b : v) b = static_cast<std::uint8_t>(rng());
    return v;
}

nlohmann::ordered_json summary_json(const std::vector<double>& samples) {
    const auto s = summarize(samples);
    if (!s) return nullptr;
    return {{"count", s->count}, {"min", s->min}, {"p50", s->p50}, {"p90", s->p90}, {"max", s->max}};
}

nlohmann::ordered_json exits_json(const Exits& e) {
    return {{"io", e.io}, {"mmio", e.mmio}, {"total", e.io + e.mmio}};
}

}  // namespace

int bench_channel(std::span<char*> args) {
    vmm::VmConfig config;
    std::size_t bytes = 1 << 20;
    std::size_t rounds = 5;
    std::size_t execs = 20;
    bool json = false;
    OptionParser parser("forkvm bench channel", kUsage);
    add_vm_options(parser, config);
    parser.number("--bytes", bytes, 1ULL << 30);
    parser.number("--rounds", rounds, 10000);
    parser.number("--execs", execs, 100000);
    parser.flag("--json", json);
    const auto parsed = parser.parse(args, 0);
    if (parsed.exit_status) return *parsed.exit_status;
    if (!parsed.rest.empty()) return parser.usage_error("unexpected argument '" + parsed.rest.front() + "'");
    if (bytes == 0 || rounds == 0) return parser.usage_error("--bytes and --rounds must be at least 1");
    if (!check_vm_config(parser, config)) return 2;

    std::vector<double> up_mbs, down_mbs, exec_ms;
    Exits up64, down64, exec1;
    std::unique_ptr<vmm::VmProcess> vm;
    try {
        vm = vmm::VmProcess::spawn(config, spawn_options(false));
        vmm::AgentClient agent(vm->take_agent_fd());
        agent.wait_ready(std::chrono::minutes(5));
        std::fprintf(stderr, "agent ready on the %s channel\n",
                     std::string(vmm::to_string(config.agent_channel)).c_str());
        const auto data = random_bytes(bytes);
        const auto block = random_bytes(k64KiB);
        const vmm::WriteFileRequest put{"/tmp/bench.bin", 0644, false, false};
        const vmm::WriteFileRequest put64{"/tmp/bench64.bin", 0644, false, false};

        up64 = exits_during(*vm, [&] { agent.write_file(put64, block, kDeadline); });
        down64 = exits_during(*vm, [&] {
            if (agent.read_file({"/tmp/bench64.bin", 0, 0}, kDeadline).data != block) {
                throw std::runtime_error("64 KiB read back differs");
            }
        });
        vmm::ExecRequest truth;
        truth.argv = {"true"};
        exec1 = exits_during(*vm, [&] { (void)agent.exec_buffered(truth, kDeadline); });
        std::fprintf(stderr, "device exits: 64 KiB upload %llu, 64 KiB download %llu, exec %llu\n",
                     static_cast<unsigned long long>(up64.io + up64.mmio),
                     static_cast<unsigned long long>(down64.io + down64.mmio),
                     static_cast<unsigned long long>(exec1.io + exec1.mmio));

        const double mb = static_cast<double>(bytes) / 1e6;
        for (std::size_t i = 0; i < rounds; ++i) {
            const Stopwatch up;
            agent.write_file(put, data, kDeadline);
            up_mbs.push_back(mb / (up.elapsed_ms() / 1000.0));
            const Stopwatch down;
            auto back = agent.read_file({"/tmp/bench.bin", 0, 0}, kDeadline);
            down_mbs.push_back(mb / (down.elapsed_ms() / 1000.0));
            if (back.data != data) throw std::runtime_error("read back differs from what was written");
            std::fprintf(stderr, "round %zu: upload %.3f MB/s, download %.3f MB/s\n", i + 1, up_mbs.back(),
                         down_mbs.back());
        }
        for (std::size_t i = 0; i < execs; ++i) {
            const Stopwatch one;
            auto r = agent.exec_buffered(truth, kDeadline);
            exec_ms.push_back(one.elapsed_ms());
            if (r.exit_code != 0) throw std::runtime_error("`true` failed in the guest");
        }
        agent.close();
        vm->stop(std::chrono::seconds(10));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "forkvm bench channel: %s\n", e.what());
        if (vm) report_vm_failure("forkvm bench channel", *vm);
        return 1;
    }

    const std::string channel(vmm::to_string(config.agent_channel));
    if (json) {
        nlohmann::ordered_json j = {{"channel", channel},
                                    {"bytes", bytes},
                                    {"rounds", rounds},
                                    {"upload_mb_per_s", summary_json(up_mbs)},
                                    {"download_mb_per_s", summary_json(down_mbs)},
                                    {"exec_round_trip_ms", summary_json(exec_ms)},
                                    {"exits_upload_64k", exits_json(up64)},
                                    {"exits_download_64k", exits_json(down64)},
                                    {"exits_exec", exits_json(exec1)}};
        std::printf("%s\n", j.dump(2).c_str());
        return 0;
    }
    auto line = [](const char* what, const std::vector<double>& v, const char* unit) {
        if (const auto s = summarize(v)) {
            std::printf("%-22s p50 %10.3f  p90 %10.3f  min %10.3f  max %10.3f %s (n=%zu)\n", what, s->p50,
                        s->p90, s->min, s->max, unit, s->count);
        }
    };
    std::printf("channel %s, %zu bytes x %zu rounds\n", channel.c_str(), bytes, rounds);
    line("upload", up_mbs, "MB/s");
    line("download", down_mbs, "MB/s");
    line("exec round trip", exec_ms, "ms");
    std::printf("device exits: 64 KiB upload %llu, 64 KiB download %llu, one exec %llu\n",
                static_cast<unsigned long long>(up64.io + up64.mmio),
                static_cast<unsigned long long>(down64.io + down64.mmio),
                static_cast<unsigned long long>(exec1.io + exec1.mmio));
    return 0;
}

}  // namespace forkvm::cli
