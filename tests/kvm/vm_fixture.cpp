#include "vm_fixture.hpp"

#include <doctest/doctest.h>

#ifndef FORKVM_TEST_BINARY
#error "FORKVM_TEST_BINARY must be defined by the build"
#endif

namespace forkvm::test {

vmm::VmConfig test_vm_config(std::uint64_t memory_mb) {
    vmm::VmConfig c;
    c.memory_mb = memory_mb;
    c.kernel_path = FORKVM_TEST_KERNEL;
    c.initrd_path = FORKVM_TEST_INITRD;
    return c;
}

vmm::SpawnOptions test_spawn_options() {
    vmm::SpawnOptions o;
    o.forkvm_binary = FORKVM_TEST_BINARY;
    o.boot_timeout = kBootTimeout;
    return o;
}

std::unique_ptr<TestVm> TestVm::boot(std::uint64_t memory_mb) {
    auto vm = std::make_unique<TestVm>();
    vm->process = vmm::VmProcess::spawn(test_vm_config(memory_mb), test_spawn_options());
    vm->agent = std::make_unique<vmm::AgentClient>(vm->process->take_agent_fd());
    try {
        vm->agent->wait_ready(kBootTimeout);
    } catch (...) {
        MESSAGE("guest console:\n" << vm->process->console_tail());
        throw;
    }
    return vm;
}

std::unique_ptr<TestVm> TestVm::adopt(std::unique_ptr<vmm::VmProcess> process) {
    auto vm = std::make_unique<TestVm>();
    vm->process = std::move(process);
    vm->agent = std::make_unique<vmm::AgentClient>(vm->process->take_agent_fd());
    try {
        (void)vm->agent->ping(kBootTimeout);
    } catch (...) {
        MESSAGE("guest console:\n" << vm->process->console_tail());
        throw;
    }
    return vm;
}

vmm::BufferedExecResult TestVm::run(std::vector<std::string> argv, std::string user,
                                    std::uint32_t timeout_ms) {
    vmm::ExecRequest req;
    req.argv = std::move(argv);
    req.user = std::move(user);
    req.timeout_ms = timeout_ms;
    return agent->exec_buffered(req, kOpTimeout);
}

vmm::BufferedExecResult TestVm::sh(const std::string& script) { return run({"sh", "-c", script}, "root"); }

TestVm& shared_vm() {
    static std::unique_ptr<TestVm> vm = TestVm::boot();
    return *vm;
}

}  // namespace forkvm::test
