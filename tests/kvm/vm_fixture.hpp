#pragma once
// A booted VM for kvm tests: its process handle and its agent client. Each
// test file runs in its own process (tests/CMakeLists.txt) and boots one VM
// on first use; the cases of the file share it, because a boot takes tens of
// seconds in the emulated KVM host.

#include <sys/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "vmm/agent_client.hpp"
#include "vmm/vm_process.hpp"

namespace forkvm::test {

struct TestVm {
    std::unique_ptr<vmm::VmProcess> process;
    std::unique_ptr<vmm::AgentClient> agent;

    // Boots a VM from the build's kernel and initramfs and waits for its agent.
    static std::unique_ptr<TestVm> boot(std::uint64_t memory_mb = 256,
                                        vmm::AgentChannel channel = vmm::AgentChannel::virtio);
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

vmm::VmConfig test_vm_config(std::uint64_t memory_mb = 256,
                             vmm::AgentChannel channel = vmm::AgentChannel::virtio);
// Jailed (uids from kJailUidBase), seccomp enforced, each VM process in a
// cgroup of its own with these limits.
constexpr uid_t kJailUidBase = 1500000000;
constexpr std::uint64_t kMemoryOverhead = 128ULL << 20;
constexpr std::uint32_t kMaxProcesses = 64;
vmm::SpawnOptions test_spawn_options();

// The pids whose parent is `parent` (from /proc).
std::vector<pid_t> children_of(pid_t parent);

// The value of a line of /proc/<pid>/status ("Uid", "CapEff", ...), "" if absent.
std::string status_field(pid_t pid, const std::string& name);

// Polls `pred` every 50 ms until it holds or `limit` passes; returns it.
template <typename Pred>
bool poll_until(Pred pred, std::chrono::seconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return pred();
}

// Spawns FORKVM_TEST_BINARY with `args` as a controller of VMs, waits until
// it has at least `vm_count` child processes, SIGKILLs it, and returns the
// VM processes it had (now orphans reparented to us: the caller must be a
// child subreaper). Throws (REQUIRE) if they never appear.
std::vector<pid_t> kill_controller_with_vms(std::vector<std::string> args, std::size_t vm_count);

// True when every pid in `pids` has exited and been reaped within `limit`;
// kills leftovers so a failing test leaves nothing behind.
bool all_reaped(const std::vector<pid_t>& pids, std::chrono::seconds limit);

// Generous deadlines: the emulated KVM host is 10-100x slower than hardware.
constexpr std::chrono::minutes kBootTimeout{5};
constexpr std::chrono::minutes kOpTimeout{3};

}  // namespace forkvm::test
