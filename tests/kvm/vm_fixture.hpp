#pragma once
// A booted VM for kvm tests: its process handle and its agent client. Each
// test file runs in its own process (tests/CMakeLists.txt) and boots one VM
// on first use; the cases of the file share it, because a boot takes tens of
// seconds in the emulated KVM host.

#include <chrono>
#include <memory>
#include <string>

#include "vmm/agent_client.hpp"
#include "vmm/vm_process.hpp"

namespace forkvm::test {

struct TestVm {
    std::unique_ptr<vmm::VmProcess> process;
    std::unique_ptr<vmm::AgentClient> agent;

    // Boots a VM from the build's kernel and initramfs and waits for its agent.
    static std::unique_ptr<TestVm> boot(std::uint64_t memory_mb = 256);
    // Wraps a restored or forked VM process and waits until its agent
    // answers a ping (a clone's agent sends no Ready frame).
    static std::unique_ptr<TestVm> adopt(std::unique_ptr<vmm::VmProcess> process);

    // Runs argv and returns its buffered result (deadline generous for the
    // emulated host).
    vmm::BufferedExecResult run(std::vector<std::string> argv, std::string user = "",
                                std::uint32_t timeout_ms = 0);
    // Runs `sh -c script` as root.
    vmm::BufferedExecResult sh(const std::string& script);
};

// The VM shared by the test cases of one file.
TestVm& shared_vm();

vmm::VmConfig test_vm_config(std::uint64_t memory_mb = 256);
vmm::SpawnOptions test_spawn_options();

// Generous deadlines: the emulated KVM host is 10-100x slower than hardware.
constexpr std::chrono::minutes kBootTimeout{5};
constexpr std::chrono::minutes kOpTimeout{3};

}  // namespace forkvm::test
