// The agent channel on the virtio console (the default), in a real VM: the
// guest finds the device on PCI and the agent talks on /dev/hvc0; 4 MiB of
// command output arrives whole, or cut exactly at the cap and flagged; a
// fork and a snapshot taken while a command runs keep every channel working
// (docs/agent-protocol.md, "The channel").

#include <unistd.h>

#include <chrono>
#include <doctest/doctest.h>
#include <filesystem>
#include <future>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "vm_fixture.hpp"

using forkvm::test::kOpTimeout;
using forkvm::test::shared_vm;
using forkvm::test::TestVm;
using forkvm::vmm::CloneOptions;
using forkvm::vmm::VmProcess;
using forkvm::vmm::VmProcessError;

namespace {

// 4 MiB: every byte value in order, then a pattern that repeats with no
// short period (a dropped or repeated chunk cannot go unnoticed).
std::string pattern(std::size_t size) {
    std::string s(size, '\0');
    for (std::size_t i = 0; i < size; ++i) {
        s[i] = static_cast<char>(i < 256 ? i : (i * 2654435761U) >> 13);
    }
    return s;
}

// Runs `fn` until it does not throw "agent channel busy" (the VM process
// refuses snapshots and forks while bytes are moving: documented) or 30
// tries have passed.
template <typename Fn>
auto retry_while_busy(Fn fn) {
    for (int attempt = 1;; ++attempt) {
        try {
            return fn();
        } catch (const VmProcessError& e) {
            if (attempt == 30 || std::string(e.what()).find("agent channel busy") == std::string::npos) throw;
            MESSAGE("attempt " << attempt << ": " << e.what());
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
        }
    }
}

}  // namespace

TEST_CASE("virtio channel: the agent talks on /dev/hvc0 of a virtio console the guest found on PCI") {
    auto& vm = shared_vm();
    auto r = vm.sh(
        "grep -o 'forkvm.agent=[a-z]*' /proc/cmdline; ls -l /proc/1/fd | grep -c hvc0; "
        "cat /sys/bus/pci/devices/0000:00:01.0/vendor /sys/bus/pci/devices/0000:00:01.0/device; "
        "grep -c virtio /proc/interrupts");
    INFO(r.stderr_data);
    CHECK(r.stdout_data == "forkvm.agent=virtio\n1\n0x1af4\n0x1043\n1\n");
}

TEST_CASE("virtio channel: a command writing 4 MiB to stdout arrives whole, or cut exactly at the cap") {
    auto& vm = shared_vm();
    const std::string data = pattern(4 << 20);
    vm.agent->write_file({"/tmp/out4m.bin", 0644, false, false},
                         std::span(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()),
                         kOpTimeout);

    forkvm::vmm::ExecRequest whole;
    whole.argv = {"cat", "/tmp/out4m.bin"};
    whole.stdout_cap = 8 << 20;
    auto all = vm.agent->exec_buffered(whole, kOpTimeout);
    CHECK(all.exit_code == 0);
    CHECK_FALSE(all.stdout_truncated);
    CHECK(all.stdout_data.size() == data.size());
    CHECK(all.stdout_data == data);

    forkvm::vmm::ExecRequest capped = whole;
    capped.stdout_cap = (1 << 20) + 3;
    auto cut = vm.agent->exec_buffered(capped, kOpTimeout);
    CHECK(cut.stdout_truncated);
    CHECK(cut.stdout_data.size() == capped.stdout_cap);
    CHECK(cut.stdout_data == data.substr(0, capped.stdout_cap));
    CHECK(vm.sh("echo after").stdout_data == "after\n");
}

TEST_CASE("virtio channel: a fork and a snapshot taken while a command runs keep every channel working") {
    auto& vm = shared_vm();
    // The command is in flight (started, its exit not yet sent) while the VM
    // is forked and snapshotted: the channel is idle, so both go ahead. The source's command finishes
    // normally; each copy carries its own copy of the command, whose output goes to a host that never asked
    // for it and is dropped (counted as unknown replies).
    REQUIRE(vm.sh("rm -f /tmp/inflight").exit_code == 0);
    auto running =
        std::async(std::launch::async, [&] { return vm.sh("touch /tmp/inflight; sleep 10; echo finished"); });
    REQUIRE(forkvm::test::poll_until(
        [&] { return vm.sh("test -e /tmp/inflight && echo yes").stdout_data == "yes\n"; },
        std::chrono::seconds(60)));

    auto clone = TestVm::adopt(retry_while_busy([&] {
        return vm.process->fork(CloneOptions{"inflight-fork", false});
    }));
    const std::string dir =
        (std::filesystem::temp_directory_path() / ("forkvm-virtio-snap." + std::to_string(::getpid())))
            .string();
    retry_while_busy([&] {
        vm.process->snapshot(dir);
        return 0;
    });

    CHECK(running.get().stdout_data == "finished\n");
    CHECK(clone->sh("hostname").stdout_data == "inflight-fork\n");
    auto restored = TestVm::adopt(
        VmProcess::restore(dir, CloneOptions{"inflight-restore", false}, forkvm::test::test_spawn_options()));
    CHECK(restored->sh("hostname").stdout_data == "inflight-restore\n");

    // The copies' own command ends too: its output and exit reach hosts
    // that never asked for them and are dropped as unknown replies. Then
    // every channel still carries data both ways.
    for (TestVm* copy : {clone.get(), restored.get()}) {
        CHECK(forkvm::test::poll_until([&] { return copy->agent->unknown_replies() >= 1; },
                                       std::chrono::seconds(120)));
    }
    const std::string block = pattern(256 << 10);
    for (TestVm* t : {&vm, clone.get(), restored.get()}) {
        t->agent->write_file({"/tmp/after.bin", 0644, false, false},
                             std::span(reinterpret_cast<const std::uint8_t*>(block.data()), block.size()),
                             kOpTimeout);
        auto back = t->agent->read_file({"/tmp/after.bin", 0, 0}, kOpTimeout);
        CHECK(std::string(back.data.begin(), back.data.end()) == block);
    }
    clone->process->stop();
    restored->process->stop();
    std::filesystem::remove_all(dir);
}
