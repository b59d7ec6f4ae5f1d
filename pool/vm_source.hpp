#pragma once
// The narrow seam between pool logic and real VMs. WarmPool only ever makes,
// checks, resumes and destroys VMs through these two interfaces, so its
// queueing, refill and capacity rules are unit-testable with a fake source.
// The product implementation (a zygote VmProcess plus its AgentClient) lives
// elsewhere and must not be replaced by a fake outside tests.

#include <memory>
#include <string>

namespace forkvm::vmm {
class AgentClient;
}

namespace forkvm::pool {

// One VM as the pool sees it: forked paused, resumed when leased, destroyed
// when its sandbox ends. Implementations must make destroy() idempotent.
class PooledVm {
public:
    virtual ~PooledVm() = default;
    PooledVm() = default;
    PooledVm(const PooledVm&) = delete;
    PooledVm& operator=(const PooledVm&) = delete;

    // The id given to VmSource::fork_paused (also the guest's hostname).
    virtual std::string id() const = 0;
    // Let the paused clone run (and refresh its clock). A non-empty
    // `identity` becomes its hostname first (the sandbox id). May throw.
    virtual void resume(const std::string& identity) = 0;
    // A cheap liveness check (process alive, agent answers). May block
    // briefly; an exception counts as unhealthy.
    virtual bool healthy() = 0;
    // Kill the VM and free its resources. Must never throw; idempotent.
    virtual void destroy() noexcept = 0;

    // The agent channel of the running VM (after resume(), or of a fork()).
    // Valid until destroy().
    virtual vmm::AgentClient& agent() = 0;
    // A running clone of this VM's current state, named `id` (its hostname).
    // The agent channel must be idle. Throws on failure.
    virtual std::unique_ptr<PooledVm> fork(const std::string& id) = 0;
    // Writes a snapshot of the running VM into `dir` (must not exist yet);
    // the VM pauses meanwhile and then runs on. The agent channel must be
    // idle. Throws on failure.
    virtual void snapshot(const std::string& dir) = 0;
    // The last bytes the guest wrote to its console; "" if unknown. Never throws.
    virtual std::string console_tail() noexcept = 0;
    // Why the VM stopped ("seccomp: ...", "guest powered off"), once its
    // agent channel is gone; "" while it runs or when unknown. May wait
    // briefly for the VM's own report. Never throws.
    virtual std::string stop_reason() noexcept { return {}; }
};

// Makes paused VMs. Called from the pool's refill threads, possibly
// concurrently (up to PoolSettings::refill_concurrency at once).
class VmSource {
public:
    virtual ~VmSource() = default;
    VmSource() = default;
    VmSource(const VmSource&) = delete;
    VmSource& operator=(const VmSource&) = delete;

    // Fork one paused clone named `id`. Throws (any std::exception) on failure;
    // never returns null.
    virtual std::unique_ptr<PooledVm> fork_paused(const std::string& id) = 0;
};

}  // namespace forkvm::pool
