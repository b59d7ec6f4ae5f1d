#pragma once
// The product VmSource: warm VMs are zero-copy forks of one paused zygote,
// a VM process restored from the golden snapshot (DESIGN.md §1). Each fork
// shares the zygote's memory copy-on-write and starts with its own hygiene
// (entropy, clock, hostname = the pool's id for it).
//
// If the zygote dies, the next fork_paused() restores a new one from the
// same snapshot (the pool's backoff paces the retries if that fails too).

#include <chrono>
#include <memory>
#include <mutex>
#include <string>

#include "pool/vm_source.hpp"
#include "vmm/vm_process.hpp"

namespace forkvm::pool {

struct VmProcessSourceSettings {
    std::string snapshot_dir;  // the golden snapshot
    vmm::SpawnOptions spawn;   // how VM processes are started
    // Longest wait for a resumed or forked VM's agent to answer.
    std::chrono::milliseconds agent_ready_within{std::chrono::seconds(60)};
    std::chrono::milliseconds fork_timeout{std::chrono::seconds(60)};
};

class VmProcessSource final : public VmSource {
public:
    // Restores the zygote at once (paused); throws vmm::VmProcessError
    // (snapshot_error() names a refused snapshot) if it cannot.
    explicit VmProcessSource(VmProcessSourceSettings settings);
    ~VmProcessSource() override;

    std::unique_ptr<PooledVm> fork_paused(const std::string& id) override;

    // The zygote's pid (for tests and memory accounting); -1 if none is alive.
    [[nodiscard]] pid_t zygote_pid() const;

private:
    vmm::VmProcess& live_zygote();  // requires mutex_

    const VmProcessSourceSettings settings_;
    mutable std::mutex mutex_;  // one fork at a time: the zygote pauses for each
    std::unique_ptr<vmm::VmProcess> zygote_;
};

}  // namespace forkvm::pool
