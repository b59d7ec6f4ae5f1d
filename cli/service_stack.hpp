#pragma once
// ServiceStack: everything `forkvm serve` runs behind its HTTP server, built
// from the configuration: the golden snapshot (cached or booted once) and
// its zygote, the default warm pool, the snapshot store, the templates with
// their pools, and the SandboxManager over them. `forkvm bench api` drives
// the same stack without HTTP, so the two benchmarks differ only by HTTP.

#include <sys/types.h>

#include <memory>

#include "config/config.hpp"
#include "pool/egress_service.hpp"
#include "pool/golden_snapshot.hpp"
#include "pool/sandbox_manager.hpp"
#include "pool/snapshot_store.hpp"
#include "pool/template_catalog.hpp"
#include "pool/warm_pool.hpp"
#include "vmm/vm_process.hpp"

namespace forkvm::cli {

// Finds (and sets up) the host's per-VM cgroups once; a host without them
// runs VMs without those limits, said loudly in the log.
[[nodiscard]] std::shared_ptr<vmm::CgroupHost> detect_cgroups();

class ServiceStack {
public:
    // Logs its progress through spdlog; may take minutes (a golden boot).
    // VM processes go into `cgroups`' groups and, when kvm_device_fd >= 0,
    // use that open /dev/kvm (it must outlive the stack). Throws on failure.
    ServiceStack(const config::Config& c, std::shared_ptr<const vmm::CgroupHost> cgroups,
                 int kvm_device_fd = -1);
    ~ServiceStack();
    ServiceStack(const ServiceStack&) = delete;
    ServiceStack& operator=(const ServiceStack&) = delete;

    pool::SandboxManager& manager() noexcept { return manager_; }
    pool::WarmPool& warm_pool() noexcept { return pool_; }
    [[nodiscard]] pid_t zygote_pid() const { return golden_.source->zygote_pid(); }

    // Ends every sandbox, drains every pool. Idempotent; the destructor calls it.
    void shutdown() noexcept;

private:
    vmm::SpawnOptions spawn_;  // jail and per-VM cgroups from the config
    pool::GoldenSource golden_;
    pool::WarmPool pool_;
    pool::SnapshotStore snapshots_;
    pool::TemplateCatalog templates_;
    pool::EgressService egress_;  // outlives the manager, whose sandboxes use it
    pool::SandboxManager manager_;
};

}  // namespace forkvm::cli
