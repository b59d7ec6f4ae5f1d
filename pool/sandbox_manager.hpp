#pragma once
// SandboxManager: the product SandboxService (pool/sandbox_service.hpp) over
// a WarmPool, a SandboxRegistry and each VM's agent channel.
//
// Ownership: the manager owns the registry (bookkeeping, caps, TTLs) and one
// Entry per live sandbox holding its LeasedVm (from the pool, or a clone made
// by fork()). It uses the pool by reference; the pool must outlive it.
//
// Threads and locks:
// - mutex_ guards the id -> Entry map, the counters and the sweeper's state;
//   it is never held across a VM, agent or pool call.
// - each Entry has its own mutex for its gate: agent calls (exec, files)
//   count themselves in; fork() waits up to fork_wait for that count to reach
//   zero (then conflict "sandbox busy"); calls that arrive while a fork waits
//   or runs queue behind it. Closing an Entry (delete, expiry, broken,
//   shutdown) closes the agent channel so in-flight calls return at once,
//   and the last call out destroys the VM; with no call in flight the VM is
//   destroyed at once.
// - a sweeper thread expires sandboxes every sweep_interval and marks
//   sandboxes whose agent channel died as broken.

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>

#include "pool/agent_error_mapping.hpp"
#include "pool/egress_service.hpp"
#include "pool/host_memory.hpp"
#include "pool/sandbox_registry.hpp"
#include "pool/sandbox_service.hpp"
#include "pool/service_error.hpp"
#include "pool/snapshot_store.hpp"
#include "pool/template_catalog.hpp"
#include "pool/warm_pool.hpp"
#include "snapshot/export_stream.hpp"

namespace forkvm::pool {

struct ManagerSettings {
    RegistrySettings registry;
    std::size_t max_fork_count = 16;                         // clones per fork() call; >= 1
    std::chrono::milliseconds fork_wait{5000};               // how long fork() waits for an idle channel
    std::chrono::milliseconds default_exec_timeout{60'000};  // exec without timeout_ms
    std::chrono::milliseconds max_exec_timeout{600'000};     // larger timeout_ms is rejected
    std::uint64_t max_output_bytes = 16 * 1024 * 1024;       // per stream; larger requests are capped
    std::chrono::milliseconds file_timeout{120'000};         // deadline of one file call
    std::chrono::milliseconds sweep_interval{1000};          // expiry / dead-VM scan period
    // Below this much host MemAvailable, create() and fork() answer
    // insufficient_memory (503 + Retry-After) instead of adding a VM; 0 = never.
    std::uint64_t min_free_memory = 0;
    MemoryProbe memory_probe = host_mem_available;  // injectable for tests
    snapshot::ImportLimits import_limits;           // bounds on an imported snapshot's files
};

// Throws ServiceError(invalid_argument) naming the offending field.
void validate(const ManagerSettings& settings);

// Where snapshots and templates live; both outlive the manager. Null (tests
// of sandboxes alone): those calls answer unavailable.
struct Catalog {
    SnapshotStore* snapshots = nullptr;
    TemplateCatalog* templates = nullptr;
};

class SandboxManager final : public SandboxService {
public:
    using IdGenerator = std::function<std::string()>;

    // `pool` must outlive the manager. `clock` drives the registry's TTLs
    // (default: the system clock). `make_id` names sandboxes (default: "sb-"
    // plus 20 random hex digits). `egress` carries the sandboxes' proxied
    // connections (null: every one is refused by the agent client, 403);
    // it must outlive the manager. Starts the sweeper thread.
    SandboxManager(WarmPool& pool, ManagerSettings settings, SandboxRegistry::Clock clock = {},
                   IdGenerator make_id = {}, Catalog catalog = {}, EgressService* egress = nullptr);
    ~SandboxManager() override;

    Sandbox create(const std::string& owner, const CreateSandbox& request) override;
    Sandbox get(const std::string& owner, const std::string& id) override;
    SandboxPage list(const std::string& owner, const ListSandboxes& request) override;
    void remove(const std::string& owner, const std::string& id) override;
    Sandbox keep_alive(const std::string& owner, const std::string& id,
                       std::optional<std::chrono::milliseconds> ttl) override;
    std::vector<Sandbox> fork(const std::string& owner, const std::string& id,
                              const ForkSandbox& request) override;
    std::string console_tail(const std::string& owner, const std::string& id) override;

    vmm::ExecResult exec(const std::string& owner, const std::string& id, const ExecCall& call,
                         const vmm::ExecCallbacks& callbacks, std::stop_token stop) override;
    vmm::BufferedExecResult exec_buffered(const std::string& owner, const std::string& id,
                                          const ExecCall& call, std::stop_token stop) override;

    void write_file(const std::string& owner, const std::string& id, const vmm::WriteFileRequest& request,
                    std::uint64_t total_size, const vmm::DataSource& source, std::stop_token stop) override;
    vmm::ReadFileResult read_file(const std::string& owner, const std::string& id,
                                  const vmm::ReadFileRequest& request, const vmm::DataSink& sink,
                                  std::stop_token stop) override;
    proto::StatResult stat(const std::string& owner, const std::string& id, const std::string& path) override;
    proto::DirEntries list_dir(const std::string& owner, const std::string& id,
                               const std::string& path) override;
    void mkdir(const std::string& owner, const std::string& id, const std::string& path, bool parents,
               std::uint32_t mode) override;
    void move(const std::string& owner, const std::string& id, const std::string& from,
              const std::string& to) override;
    void remove_path(const std::string& owner, const std::string& id, const std::string& path,
                     bool recursive) override;

    SnapshotInfo snapshot(const std::string& owner, const std::string& id,
                          const CreateSnapshot& request) override;
    std::vector<SnapshotInfo> list_snapshots(const std::string& owner) override;
    SnapshotInfo get_snapshot(const std::string& owner, const std::string& snapshot_id) override;
    void remove_snapshot(const std::string& owner, const std::string& snapshot_id) override;
    void export_snapshot(const std::string& owner, const std::string& snapshot_id,
                         const vmm::DataSink& sink) override;
    SnapshotInfo import_snapshot(const std::string& owner, const vmm::DataSource& source) override;
    TemplateInfo create_template(const std::string& owner, const CreateTemplate& request) override;
    std::vector<TemplateInfo> list_templates(const std::string& owner) override;
    TemplateInfo get_template(const std::string& owner, const std::string& name) override;
    TemplateInfo update_template(const std::string& owner, const std::string& name,
                                 const UpdateTemplate& request) override;
    void remove_template(const std::string& owner, const std::string& name) override;
    std::vector<PoolInfo> pools(const std::string& owner) override;

    bool ready() override;
    ServiceStats stats() override;

    // Run one sweep now (what the sweeper thread does every sweep_interval).
    // For tests and for an orderly shutdown; thread-safe.
    void sweep();

    // Stop the sweeper, fail new calls with unavailable, destroy every
    // sandbox's VM (after in-flight calls, whose channels are closed, return).
    // Idempotent; the destructor calls it.
    void shutdown() noexcept;

    const ManagerSettings& settings() const noexcept { return settings_; }

    struct Entry;  // one live sandbox's VM and call gate (sandbox_manager.cpp)

private:
    std::shared_ptr<Entry> entry_for(const std::string& owner, const std::string& id);
    std::shared_ptr<Entry> take_entry(const std::string& id);
    Sandbox to_sandbox(SandboxInfo info);
    void mark_broken(Entry& entry, const std::string& reason) noexcept;
    // Runs f(agent) inside the entry's gate, translating agent errors.
    template <class F>
    auto with_agent(const std::string& owner, const std::string& id, const AgentCallContext& context, F&& f);
    vmm::ExecRequest exec_request(const Entry& entry, const ExecCall& call) const;
    void record_exec(std::chrono::steady_clock::duration latency);
    void record_fork(std::chrono::steady_clock::duration latency);
    void sweeper_loop();
    // A new Entry for a VM just leased or forked, with its egress bridge
    // installed on the VM's agent channel.
    std::shared_ptr<Entry> make_entry(const std::string& id, const std::string& owner, const EnvMap& env,
                                      const std::string& user, const std::string& template_name,
                                      std::shared_ptr<const http_proxy::Policy> egress, LeasedVm vm);
    // Throws insufficient_memory when the host is below min_free_memory.
    void check_host_memory() const;

    SnapshotStore& snapshots() const;    // unavailable without a catalog
    TemplateCatalog& templates() const;  // unavailable without a catalog

    WarmPool& pool_;
    const Catalog catalog_;
    EgressService* const egress_;
    const ManagerSettings settings_;
    IdGenerator make_id_;
    SandboxRegistry::Clock clock_;  // the registry's; the sweeper asks it what "now" is
    SandboxRegistry registry_;
    // Counts fork clones like the pool counts leases (reported in stats().pool.leased).
    std::shared_ptr<std::atomic<std::size_t>> clone_gauge_;

    mutable std::mutex mutex_;
    std::condition_variable sweeper_cv_;
    std::unordered_map<std::string, std::shared_ptr<Entry>> entries_;
    bool stopping_ = false;
    std::uint64_t created_ = 0;
    std::uint64_t expired_ = 0;
    std::uint64_t forks_ = 0;
    std::uint64_t fork_failures_ = 0;
    std::uint64_t fork_latency_sum_us_ = 0;
    std::array<std::uint64_t, lease_latency_bounds_us.size() + 1> fork_buckets_{};
    std::uint64_t execs_ = 0;
    std::uint64_t exec_latency_sum_us_ = 0;
    std::array<std::uint64_t, lease_latency_bounds_us.size() + 1> exec_buckets_{};

    std::mutex shutdown_mutex_;  // serialises shutdown() callers
    std::thread sweeper_;
};

}  // namespace forkvm::pool
