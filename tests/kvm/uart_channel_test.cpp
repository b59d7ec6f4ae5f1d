// The UART fallback (vm.agent_channel = uart): a VM whose agent talks on
// COM2 passes a smaller set of agent tests (the UART moves about 2.6 KB/s in
// the emulated KVM host): exec, a file with every byte value, and a fork
// and a snapshot restore whose channels work at once.

#include <unistd.h>

#include <doctest/doctest.h>
#include <filesystem>
#include <numeric>
#include <string>
#include <vector>

#include "vm_fixture.hpp"

using forkvm::test::kOpTimeout;
using forkvm::test::TestVm;
using forkvm::vmm::AgentChannel;
using forkvm::vmm::CloneOptions;
using forkvm::vmm::VmProcess;

namespace {

TestVm& uart_vm() {
    static std::unique_ptr<TestVm> vm = TestVm::boot(256, AgentChannel::uart);
    return *vm;
}

}  // namespace

TEST_CASE("uart channel: the agent talks on /dev/ttyS1, with no PCI bus") {
    auto& vm = uart_vm();
    auto r = vm.sh(
        "grep -o 'forkvm.agent=[a-z]*' /proc/cmdline; ls -l /proc/1/fd | grep -c ttyS1; ls "
        "/sys/bus/pci/devices | wc -l");
    INFO(r.stderr_data);
    CHECK(r.stdout_data == "forkvm.agent=uart\n1\n0\n");
    auto e = vm.run({"sh", "-c", "echo out; echo err >&2; exit 3"});
    CHECK(e.stdout_data == "out\n");
    CHECK(e.stderr_data == "err\n");
    CHECK(e.exit_code == 3);
}

TEST_CASE("uart channel: a file holding every byte value round-trips byte-identical") {
    auto& vm = uart_vm();
    std::vector<std::uint8_t> data(4096);
    std::iota(data.begin(), data.end(), 0);  // every value, 16 times
    vm.agent->write_file({"/tmp/bytes.bin", 0600, false, false}, data, kOpTimeout);
    auto back = vm.agent->read_file({"/tmp/bytes.bin", 0, 0}, kOpTimeout);
    CHECK(back.data == data);
}

TEST_CASE("uart channel: a fork and a snapshot restore talk on the UART at once") {
    auto& vm = uart_vm();
    CHECK(vm.sh("echo before > /tmp/marker").exit_code == 0);
    auto clone = TestVm::adopt(vm.process->fork(CloneOptions{"uart-fork", false}));
    CHECK(clone->sh("cat /tmp/marker; hostname").stdout_data == "before\nuart-fork\n");

    const std::string dir =
        (std::filesystem::temp_directory_path() / ("forkvm-uart-snap." + std::to_string(::getpid())))
            .string();
    vm.process->snapshot(dir);
    auto restored = TestVm::adopt(
        VmProcess::restore(dir, CloneOptions{"uart-restore", false}, forkvm::test::test_spawn_options()));
    CHECK(restored->sh("cat /tmp/marker; hostname").stdout_data == "before\nuart-restore\n");
    CHECK(restored->sh("grep -o 'forkvm.agent=[a-z]*' /proc/cmdline").stdout_data == "forkvm.agent=uart\n");
    clone->process->stop();
    restored->process->stop();
    std::filesystem::remove_all(dir);
}
