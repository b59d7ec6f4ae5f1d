#pragma once
// SandboxService: everything the REST API can do to sandboxes, with no HTTP
// in it. server/ translates requests into these calls and ServiceErrors into
// responses (server/error_response.cpp); pool/sandbox_manager.* is the
// product implementation over a WarmPool, a SandboxRegistry and the VMs'
// agent channels. Tests of the HTTP layer use a scripted fake of this
// interface; tests of the manager use fake VMs with a real agent.
//
// Every call:
// - is blocking and may be made from any number of threads at once;
// - takes the caller's identity (`owner`, the API key's id): another owner's
//   sandbox answers not_found, exactly like an unknown id;
// - throws ServiceError (pool/service_error.hpp) and nothing else: agent
//   errors are translated (guest file not found -> not_found with the path,
//   permission denied -> forbidden, bad path -> invalid_argument, agent
//   timeout -> timeout, broken/closed channel -> vm_broken and the sandbox
//   is marked broken);
// - takes a std::stop_token where the work can be long; the HTTP layer
//   requests a stop when the client disconnects (an exec is then killed).
//
// Concurrency on one sandbox: exec and file calls run concurrently. fork()
// needs the source's agent channel idle (the clone continues mid-session):
// it waits up to ManagerSettings::fork_wait for in-flight calls to finish and
// then throws conflict ("sandbox busy"); calls that arrive while a fork waits
// or runs wait behind it.

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <stop_token>
#include <string>
#include <vector>

#include "guest/protocol/messages.hpp"
#include "http_proxy/policy.hpp"
#include "pool/catalog_types.hpp"
#include "pool/egress_stats.hpp"
#include "pool/sandbox_registry.hpp"
#include "pool/warm_pool.hpp"
#include "vmm/agent_client.hpp"

namespace forkvm::pool {

using EnvMap = std::map<std::string, std::string>;

// A sandbox as clients see it.
struct Sandbox {
    SandboxInfo info;           // id, owner, state, broken_reason, labels, created, expires
    EnvMap env;                 // default environment of every exec (exec's own env wins)
    std::string user;           // default user of every exec ("" = the agent's default)
    std::string template_name;  // the template it was created from ("" = the default pool)
    http_proxy::Policy egress;  // what its code may reach through the proxy (docs/egress.md)
    bool operator==(const Sandbox&) const = default;
};

struct CreateSandbox {
    std::string template_name;                     // "" = the default pool
    std::optional<std::chrono::milliseconds> ttl;  // nullopt = default_ttl
    Labels labels;
    EnvMap env;
    std::string user;
    // nullopt = the template's policy (the empty policy, which allows
    // nothing, for the default pool). Clones of a fork keep their source's.
    std::optional<http_proxy::Policy> egress;
};

struct ForkSandbox {
    std::size_t count = 1;                         // >= 1, <= max_fork_count
    std::optional<std::chrono::milliseconds> ttl;  // of the clones; nullopt = default_ttl
    Labels labels;                                 // of the clones; empty = copy the source's
};

struct ListSandboxes {
    Labels label_filter;      // every pair must match
    std::size_t limit = 100;  // 1..1000
    std::string page_token;   // from the previous page's next_page_token; "" = first page
};

struct SandboxPage {
    std::vector<Sandbox> sandboxes;  // oldest first
    std::string next_page_token;     // "" = no more
};

// One exec. argv is final (a shell string has become {"/bin/sh", "-c", s});
// env is merged over the sandbox's default env by the service; user ""
// means the sandbox's default user.
struct ExecCall {
    std::vector<std::string> argv;
    EnvMap env;
    std::string cwd;
    std::string user;
    std::chrono::milliseconds timeout{0};  // 0 = the service's default
    std::string stdin_data;
    std::uint64_t max_output_bytes = 1024 * 1024;  // per stream; more is dropped and flagged
};

// Numbers for /metrics and GET /v1/pools.
struct ServiceStats {
    PoolStats pool;
    std::size_t min_warm = 0;
    std::size_t max_warm = 0;
    std::size_t live_sandboxes = 0;
    std::uint64_t sandboxes_created = 0;
    std::uint64_t sandboxes_expired = 0;
    std::uint64_t sandbox_forks = 0;  // clones made by fork()
    std::uint64_t fork_failures = 0;
    std::uint64_t fork_latency_sum_us = 0;
    std::array<std::uint64_t, lease_latency_bounds_us.size() + 1> fork_latency_buckets{};  // same bounds
    std::uint64_t execs = 0;
    std::uint64_t exec_latency_sum_us = 0;
    std::array<std::uint64_t, lease_latency_bounds_us.size() + 1> exec_latency_buckets{};  // same bounds
    EgressStats egress;
};

class SandboxService {
public:
    virtual ~SandboxService() = default;
    SandboxService() = default;
    SandboxService(const SandboxService&) = delete;
    SandboxService& operator=(const SandboxService&) = delete;

    // Leases a warm VM (waits up to the pool's lease_wait) and registers it.
    virtual Sandbox create(const std::string& owner, const CreateSandbox& request) = 0;
    virtual Sandbox get(const std::string& owner, const std::string& id) = 0;
    virtual SandboxPage list(const std::string& owner, const ListSandboxes& request) = 0;
    // Destroys the VM at once.
    virtual void remove(const std::string& owner, const std::string& id) = 0;
    virtual Sandbox keep_alive(const std::string& owner, const std::string& id,
                               std::optional<std::chrono::milliseconds> ttl) = 0;
    // New sandboxes (same owner) that start from the source's current state.
    virtual std::vector<Sandbox> fork(const std::string& owner, const std::string& id,
                                      const ForkSandbox& request) = 0;
    // The last bytes the guest wrote to its console (diagnosis).
    virtual std::string console_tail(const std::string& owner, const std::string& id) = 0;

    // Streams output through `callbacks` (on the calling thread).
    virtual vmm::ExecResult exec(const std::string& owner, const std::string& id, const ExecCall& call,
                                 const vmm::ExecCallbacks& callbacks, std::stop_token stop) = 0;
    // Collects output (each stream up to call.max_output_bytes).
    virtual vmm::BufferedExecResult exec_buffered(const std::string& owner, const std::string& id,
                                                  const ExecCall& call, std::stop_token stop) = 0;

    // Files; paths are absolute guest paths.
    virtual void write_file(const std::string& owner, const std::string& id,
                            const vmm::WriteFileRequest& request, std::uint64_t total_size,
                            const vmm::DataSource& source, std::stop_token stop) = 0;
    virtual vmm::ReadFileResult read_file(const std::string& owner, const std::string& id,
                                          const vmm::ReadFileRequest& request, const vmm::DataSink& sink,
                                          std::stop_token stop) = 0;
    virtual proto::StatResult stat(const std::string& owner, const std::string& id,
                                   const std::string& path) = 0;
    virtual proto::DirEntries list_dir(const std::string& owner, const std::string& id,
                                       const std::string& path) = 0;
    virtual void mkdir(const std::string& owner, const std::string& id, const std::string& path, bool parents,
                       std::uint32_t mode) = 0;
    virtual void move(const std::string& owner, const std::string& id, const std::string& from,
                      const std::string& to) = 0;
    virtual void remove_path(const std::string& owner, const std::string& id, const std::string& path,
                             bool recursive) = 0;

    // Snapshots (saved on disk, per owner). snapshot() needs the sandbox's
    // agent channel idle, exactly like fork(); the sandbox keeps running.
    virtual SnapshotInfo snapshot(const std::string& owner, const std::string& id,
                                  const CreateSnapshot& request) = 0;
    virtual std::vector<SnapshotInfo> list_snapshots(const std::string& owner) = 0;
    virtual SnapshotInfo get_snapshot(const std::string& owner, const std::string& snapshot_id) = 0;
    // conflict while a template uses it.
    virtual void remove_snapshot(const std::string& owner, const std::string& snapshot_id) = 0;
    // The snapshot as one compressed stream (snapshot/export_stream.hpp),
    // through `sink` on the calling thread.
    virtual void export_snapshot(const std::string& owner, const std::string& snapshot_id,
                                 const vmm::DataSink& sink) = 0;
    // A new snapshot from an export stream read from `source`: checked
    // whole (format, sizes, SHA-256s, CPUID/KVM compatibility) before it is
    // listed; a bad stream is invalid_argument (too big: payload_too_large)
    // and leaves nothing behind.
    virtual SnapshotInfo import_snapshot(const std::string& owner, const vmm::DataSource& source) = 0;

    // Templates: a snapshot with its own warm pool; create(template_name=...)
    // leases from it.
    virtual TemplateInfo create_template(const std::string& owner, const CreateTemplate& request) = 0;
    virtual std::vector<TemplateInfo> list_templates(const std::string& owner) = 0;
    virtual TemplateInfo get_template(const std::string& owner, const std::string& name) = 0;
    virtual TemplateInfo update_template(const std::string& owner, const std::string& name,
                                         const UpdateTemplate& request) = 0;
    // Drains its pool; sandboxes made from it keep running.
    virtual void remove_template(const std::string& owner, const std::string& name) = 0;
    // The default pool first, then the owner's templates' pools.
    virtual std::vector<PoolInfo> pools(const std::string& owner) = 0;

    // True once the pool has at least one warm VM (GET /readyz).
    virtual bool ready() = 0;
    virtual ServiceStats stats() = 0;
};

}  // namespace forkvm::pool
