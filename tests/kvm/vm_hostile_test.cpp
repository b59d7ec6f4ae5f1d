// A guest that misbehaves must never crash, hang or bloat the host: output
// floods, a guest that stops answering, garbage on the agent channel, and a
// controller that dies with VMs running. (The cases run in file order: the
// garbage case breaks this file's VM, so it comes last.)

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <future>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "vm_fixture.hpp"

using forkvm::test::kOpTimeout;
using forkvm::test::poll_until;
using forkvm::test::shared_vm;
using forkvm::vmm::AgentClient;
using forkvm::vmm::AgentError;
using forkvm::vmm::AgentErrorCode;
using Clock = std::chrono::steady_clock;

namespace {

long rss_kib() {
    std::ifstream in("/proc/self/status");
    std::string key;
    while (in >> key) {
        if (key == "VmRSS:") {
            long v = 0;
            in >> v;
            return v;
        }
        in.ignore(4096, '\n');
    }
    return -1;
}

}  // namespace

TEST_CASE(
    "vm hostile: an output flood does not starve a ping or a file read, and host memory stays bounded") {
    auto& vm = shared_vm();
    const std::string small(3000, 'x');
    vm.agent->write_file({"/tmp/small.txt", 0644, false, false},
                         std::span(reinterpret_cast<const std::uint8_t*>(small.data()), small.size()),
                         kOpTimeout);

    const long rss_before = rss_kib();
    std::atomic<std::uint64_t> flooded{0};
    std::stop_source stop;
    auto flood = std::async(std::launch::async, [&] {
        forkvm::vmm::ExecRequest req;
        req.argv = {"yes", "flood flood flood flood flood flood flood flood"};
        req.timeout_ms = 600'000;
        req.stdout_cap = 1ULL << 40;
        forkvm::vmm::ExecCallbacks cb;
        cb.on_stdout = [&](forkvm::vmm::ByteView d) { flooded += d.size(); };
        return vm.agent->exec(req, cb, kOpTimeout, stop.get_token());
    });
    REQUIRE(poll_until([&] { return flooded.load() > 20'000; }, std::chrono::seconds(120)));

    // Both complete while the flood goes on.
    auto pong = vm.agent->ping(kOpTimeout);
    CHECK(pong.rtt.count() > 0);
    auto file = vm.agent->read_file({"/tmp/small.txt", 0, 0}, kOpTimeout);
    CHECK(std::string(file.data.begin(), file.data.end()) == small);
    const std::uint64_t during = flooded.load();
    CHECK(flood.wait_for(std::chrono::seconds(0)) == std::future_status::timeout);  // still flooding

    stop.request_stop();
    auto r = flood.get();
    CHECK(r.cancelled);
    CHECK(flooded.load() >= during);
    // Credits bound what the host holds: far below what the guest sent.
    const long growth = rss_kib() - rss_before;
    INFO("flooded " << flooded.load() << " bytes; RSS growth " << growth << " KiB");
    CHECK(growth < 64 * 1024);
    CHECK(vm.agent->state() == AgentClient::State::healthy);
}

TEST_CASE("vm hostile: a guest that never answers gets a timeout by the deadline, then recovers") {
    auto& vm = shared_vm();
    vm.process->pause();  // the guest is frozen: nothing answers
    const auto start = Clock::now();
    try {
        (void)vm.agent->ping(std::chrono::seconds(2));
        FAIL("a frozen guest answered");
    } catch (const AgentError& e) {
        CHECK(e.code() == AgentErrorCode::timeout);
    }
    CHECK(Clock::now() - start >= std::chrono::seconds(2));
    CHECK(vm.agent->state() == AgentClient::State::unhealthy);

    vm.process->resume();
    CHECK_NOTHROW(vm.agent->ping(kOpTimeout));
    CHECK(vm.run({"echo", "ok"}).stdout_data == "ok\n");
}

TEST_CASE("vm hostile: killing the controller leaves no VM process") {
    // Orphans are reparented to us, so we can tell when they are gone.
    REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    auto vms = forkvm::test::kill_controller_with_vms({"run", "--", "sleep", "1000"}, 1);
    CHECK(forkvm::test::all_reaped(vms, std::chrono::seconds(60)));
    ::prctl(PR_SET_CHILD_SUBREAPER, 0);
}

TEST_CASE("vm hostile: garbage on the agent channel marks the VM broken and the host stays up") {
    auto& vm = shared_vm();
    // As root, a guest process writes random bytes into the agent's channel
    // device (the virtio console's /dev/hvc0, or the UART's /dev/ttyS1).
    try {
        (void)vm.sh(
            "dev=/dev/ttyS1; grep -q forkvm.agent=virtio /proc/cmdline && dev=/dev/hvc0; "
            "head -c 4096 /dev/urandom > $dev; sleep 5");
    } catch (const AgentError& e) {
        CHECK(e.code() == AgentErrorCode::broken);
    }
    CHECK(poll_until([&] { return vm.agent->state() == AgentClient::State::broken; },
                     std::chrono::seconds(60)));
    CHECK_FALSE(vm.agent->broken_reason().empty());
    MESSAGE("broken: " << vm.agent->broken_reason());
    // Every later call fails at once, without waiting for its deadline.
    const auto start = Clock::now();
    try {
        (void)vm.agent->ping(std::chrono::minutes(10));
        FAIL("a broken channel answered");
    } catch (const AgentError& e) {
        CHECK(e.code() == AgentErrorCode::broken);
    }
    CHECK(Clock::now() - start < std::chrono::minutes(1));
    // The VM process itself still answers its controller.
    CHECK(vm.process->status().state == "running");
}
