#pragma once
// TemplateCatalog: named snapshots with their own warm pools. A user who has
// set up a sandbox (installed a runtime, written files) snapshots it, makes
// a template of the snapshot, and creates sandboxes from the template: each
// is a zero-copy fork of a zygote restored from that snapshot, taken from
// the template's own WarmPool.
//
// Persistence: one JSON file per template under `root`
// (data_dir/templates/<tpl-id>.json, written atomically); the constructor
// loads them all and reopens each pool. A template whose snapshot cannot be
// restored (gone, refused on this host) stays listed as `failed` with the
// reason; updating it retries.
//
// Life cycle: the template pins its snapshot (the snapshot cannot be deleted
// under it). Deleting the template drains its pool (warm VMs destroyed,
// waiting leases fail with unavailable) and stops its zygote; sandboxes
// already created from it are separate VM processes and keep running until
// they end. Updating pool sizes starts a new pool over the same zygote and
// drains the old one.
//
// Ownership as for sandboxes: names are per owner, another owner's template
// is not_found. Thread-safe; the catalog mutex is never held across a
// restore, a fork, a lease or file work.

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "pool/catalog_types.hpp"
#include "pool/snapshot_store.hpp"
#include "pool/vm_source.hpp"
#include "pool/warm_pool.hpp"

namespace forkvm::pool {

struct TemplateCatalogSettings {
    std::string root;                // created if missing (mode 0700)
    std::size_t max_per_owner = 10;  // templates per owner; >= 1
    std::size_t max_warm_limit = 8;  // largest max_warm a template may ask for; >= 1
    TemplatePoolSettings defaults;   // when create() leaves them out
    PoolSettings pool_base;          // lease wait, refill concurrency, backoff (sizes come per template)
};

// Opens the VM source (a zygote) of a snapshot directory. Throws on failure;
// vmm::VmProcessError::snapshot_error() names a refused snapshot.
using SourceFactory = std::function<std::unique_ptr<VmSource>(const std::string& snapshot_dir)>;

class TemplateCatalog {
public:
    TemplateCatalog(SnapshotStore& snapshots, TemplateCatalogSettings settings, SourceFactory open_source);
    ~TemplateCatalog();
    TemplateCatalog(const TemplateCatalog&) = delete;
    TemplateCatalog& operator=(const TemplateCatalog&) = delete;

    // invalid_argument (name, sizes, snapshot that cannot be restored here),
    // not_found (snapshot), conflict (name taken), rate_limited (quota).
    TemplateInfo create(const std::string& owner, const CreateTemplate& request);
    TemplateInfo get(const std::string& owner, const std::string& name) const;
    std::vector<TemplateInfo> list(const std::string& owner) const;  // by name
    TemplateInfo update(const std::string& owner, const std::string& name, const UpdateTemplate& request);
    void remove(const std::string& owner, const std::string& name);

    // A running VM from the template's pool (waits up to its lease_wait).
    // not_found, conflict (failed template), capacity_exhausted, unavailable.
    LeasedVm lease(const std::string& owner, const std::string& name, const std::string& identity = {});

    // The owner's templates' pools.
    std::vector<PoolInfo> pools(const std::string& owner) const;

    // Drains every pool and stops every zygote. Idempotent.
    void shutdown() noexcept;

private:
    struct Record {
        std::string id;  // file name stem
        std::string name;
        std::string owner;
        std::string snapshot_id;
        TemplatePoolSettings pool;
        TimePoint created{};
        http_proxy::Policy egress;
    };
    // A pool and the source it forks from, destroyed in that order.
    struct PoolHandle {
        std::shared_ptr<VmSource> source;
        std::unique_ptr<WarmPool> pool;
        ~PoolHandle();
    };
    struct Live {
        std::mutex operation;      // serialises update() and remove() of this template
        bool removed = false;      // under `operation`: remove() ran; update() must not bring it back
        mutable std::mutex mutex;  // guards record.pool, handle, error
        Record record;             // only record.pool ever changes
        std::shared_ptr<PoolHandle> handle;  // null when failed
        std::string error;
    };
    using Key = std::pair<std::string, std::string>;  // owner, name

    std::shared_ptr<Live> find(const std::string& owner, const std::string& name) const;
    std::shared_ptr<PoolHandle> open_pool(const Record& record, std::shared_ptr<VmSource> source) const;
    // Pins the snapshot and restores its zygote; throws invalid_argument/not_found.
    std::shared_ptr<VmSource> open_snapshot(const Record& record);
    void persist(const Record& record) const;
    void load_existing();
    static TemplateInfo info_of(const Live& live);
    TemplatePoolSettings checked_sizes(std::size_t min_warm, std::size_t max_warm) const;

    SnapshotStore& snapshots_;
    const TemplateCatalogSettings settings_;
    const SourceFactory open_source_;

    mutable std::mutex mutex_;
    std::map<Key, std::shared_ptr<Live>> templates_;
    std::set<Key> creating_;
    bool stopping_ = false;
};

// Template names: [a-z0-9][a-z0-9._-]{0,62}. Throws invalid_argument (field "name").
void check_template_name(const std::string& name);

}  // namespace forkvm::pool
