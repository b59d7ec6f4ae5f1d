#include "pool/template_catalog.hpp"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "pool/private_dir.hpp"
#include "pool/random_id.hpp"
#include "pool/service_error.hpp"
#include "snapshot/file_io.hpp"
#include "vmm/vm_process.hpp"

namespace forkvm::pool {

namespace fs = std::filesystem;

namespace {

constexpr int kTemplateFileFormat = 1;
// Room for the largest egress policy the API accepts.
constexpr std::size_t kMaxTemplateFileSize = 4 * 1024 * 1024;

std::int64_t to_unix_ms(TimePoint t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

ServiceError unavailable() {
    return ServiceError(ErrorCode::unavailable, "server is shutting down", std::nullopt, 1);
}

}  // namespace

std::string_view to_string(TemplateState state) noexcept {
    switch (state) {
        case TemplateState::ready: return "ready";
        case TemplateState::failed: return "failed";
    }
    return "failed";
}

void check_template_name(const std::string& name) {
    const auto ok_first = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
    const auto ok_rest = [&](char c) { return ok_first(c) || c == '.' || c == '_' || c == '-'; };
    if (name.empty() || name.size() > 63 || !ok_first(name.front()) ||
        !std::all_of(name.begin() + 1, name.end(), ok_rest)) {
        throw ServiceError::invalid_argument(
            "name",
            "a template name is 1-63 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit");
    }
}

TemplateCatalog::PoolHandle::~PoolHandle() {
    if (pool) pool->shutdown();
    pool.reset();
    source.reset();
}

TemplateCatalog::TemplateCatalog(SnapshotStore& snapshots, TemplateCatalogSettings settings,
                                 SourceFactory open_source)
    : snapshots_(snapshots), settings_(std::move(settings)), open_source_(std::move(open_source)) {
    if (settings_.max_per_owner < 1)
        throw ServiceError::invalid_argument("template.max_per_key", "must be at least 1");
    if (settings_.max_warm_limit < 1) {
        throw ServiceError::invalid_argument("template.max_warm_limit", "must be at least 1");
    }
    ensure_private_dir(settings_.root);
    load_existing();
}

TemplateCatalog::~TemplateCatalog() { shutdown(); }

TemplatePoolSettings TemplateCatalog::checked_sizes(std::size_t min_warm, std::size_t max_warm) const {
    if (max_warm < 1 || max_warm > settings_.max_warm_limit) {
        throw ServiceError::invalid_argument("max_warm",
                                             "must be 1 to " + std::to_string(settings_.max_warm_limit));
    }
    if (min_warm > max_warm) throw ServiceError::invalid_argument("min_warm", "must not exceed max_warm");
    return {min_warm, max_warm};
}

std::shared_ptr<TemplateCatalog::PoolHandle> TemplateCatalog::open_pool(
    const Record& record, std::shared_ptr<VmSource> source) const {
    PoolSettings pool = settings_.pool_base;
    pool.name = "template '" + record.name + "'";
    pool.min_warm = record.pool.min_warm;
    pool.max_warm = record.pool.max_warm;
    auto handle = std::make_shared<PoolHandle>();
    handle->source = std::move(source);
    handle->pool = std::make_unique<WarmPool>(*handle->source, pool);
    return handle;
}

std::shared_ptr<VmSource> TemplateCatalog::open_snapshot(const Record& record) {
    const std::string dir = snapshots_.pin(record.owner, record.snapshot_id, record.name);
    try {
        return std::shared_ptr<VmSource>(open_source_(dir));
    } catch (const vmm::VmProcessError& e) {
        snapshots_.unpin(record.snapshot_id, record.name);
        throw ServiceError::invalid_argument(
            "snapshot_id",
            "snapshot '" + record.snapshot_id + "' cannot be restored on this host: " + e.what());
    } catch (const std::exception& e) {
        snapshots_.unpin(record.snapshot_id, record.name);
        throw ServiceError::invalid_argument(
            "snapshot_id", "snapshot '" + record.snapshot_id + "' could not be opened: " + e.what());
    }
}

void TemplateCatalog::persist(const Record& record) const {
    nlohmann::ordered_json j;
    j["format"] = kTemplateFileFormat;
    j["id"] = record.id;
    j["name"] = record.name;
    j["owner"] = record.owner;
    j["snapshot_id"] = record.snapshot_id;
    j["min_warm"] = record.pool.min_warm;
    j["max_warm"] = record.pool.max_warm;
    j["created_unix_ms"] = to_unix_ms(record.created);
    j["egress"] = record.egress.to_json();
    const std::string text = j.dump(2) + "\n";
    // What load_existing() would refuse to read back must not be written.
    if (text.size() > kMaxTemplateFileSize) {
        throw ServiceError::invalid_argument("egress", "too large to keep with the template (over " +
                                                           std::to_string(kMaxTemplateFileSize >> 20U) +
                                                           " MiB as JSON)");
    }
    snapshot::write_file_atomic((fs::path(settings_.root) / (record.id + ".json")).string(),
                                std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

void TemplateCatalog::load_existing() {
    std::error_code ec;
    std::vector<fs::path> files;
    for (fs::directory_iterator it(settings_.root, ec), end; !ec && it != end; it.increment(ec)) {
        if (it->path().extension() == ".json" && it->path().filename().string().starts_with("tpl-")) {
            files.push_back(it->path());
        }
    }
    std::sort(files.begin(), files.end());
    for (const auto& path : files) {
        Record record;
        try {
            const auto bytes = snapshot::read_file_capped(path.string(), kMaxTemplateFileSize);
            const auto j = nlohmann::json::parse(bytes.begin(), bytes.end());
            if (j.value("format", 0) != kTemplateFileFormat) throw std::runtime_error("unknown format");
            record.id = j.at("id").get<std::string>();
            record.name = j.at("name").get<std::string>();
            record.owner = j.at("owner").get<std::string>();
            record.snapshot_id = j.at("snapshot_id").get<std::string>();
            record.pool = {j.at("min_warm").get<std::size_t>(), j.at("max_warm").get<std::size_t>()};
            record.created =
                TimePoint(std::chrono::milliseconds(j.at("created_unix_ms").get<std::int64_t>()));
            // Absent in files written before templates had a policy: the empty one.
            if (const auto it = j.find("egress"); it != j.end())
                record.egress = http_proxy::Policy::parse(*it);
            check_template_name(record.name);
            if (record.id + ".json" != path.filename().string())
                throw std::runtime_error("id does not match the file");
            record.pool = checked_sizes(record.pool.min_warm, record.pool.max_warm);
        } catch (const std::exception& e) {
            spdlog::warn("templates: skipping {}: {}", path.string(), e.what());
            continue;
        }
        auto live = std::make_shared<Live>();
        live->record = record;
        try {
            live->handle = open_pool(record, open_snapshot(record));
            spdlog::info("templates: '{}' reopened from snapshot {}", record.name, record.snapshot_id);
        } catch (const std::exception& e) {
            live->error = e.what();
            spdlog::warn("templates: '{}' failed to reopen: {}", record.name, e.what());
            // Still this template's snapshot: keep it from being deleted (an update retries).
            try {
                (void)snapshots_.pin(record.owner, record.snapshot_id, record.name);
            } catch (const ServiceError&) {  // NOLINT(bugprone-empty-catch): the snapshot is gone
            }
        }
        templates_[{record.owner, record.name}] = std::move(live);
    }
}

TemplateInfo TemplateCatalog::info_of(const Live& live) {
    TemplateInfo info;
    info.name = live.record.name;
    info.owner = live.record.owner;
    info.snapshot_id = live.record.snapshot_id;
    info.created = live.record.created;
    info.egress = live.record.egress;
    std::shared_ptr<PoolHandle> handle;
    {
        const std::lock_guard lock(live.mutex);
        info.pool = live.record.pool;
        handle = live.handle;
        info.error = live.error;
    }
    info.state = handle ? TemplateState::ready : TemplateState::failed;
    if (handle) info.stats = handle->pool->stats();
    return info;
}

std::shared_ptr<TemplateCatalog::Live> TemplateCatalog::find(const std::string& owner,
                                                             const std::string& name) const {
    const std::lock_guard lock(mutex_);
    if (stopping_) throw unavailable();
    const auto it = templates_.find({owner, name});
    if (it == templates_.end()) throw ServiceError::not_found("no template '" + name + "'");
    return it->second;
}

TemplateInfo TemplateCatalog::create(const std::string& owner, const CreateTemplate& request) {
    check_template_name(request.name);
    if (request.snapshot_id.empty()) throw ServiceError::invalid_argument("snapshot_id", "is required");
    Record record;
    record.id = random_id("tpl-");
    record.name = request.name;
    record.owner = owner;
    record.snapshot_id = request.snapshot_id;
    record.pool = checked_sizes(
        request.min_warm.value_or(settings_.defaults.min_warm),
        request.max_warm.value_or(std::max(settings_.defaults.max_warm, request.min_warm.value_or(0))));
    record.created =
        std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    record.egress = request.egress;
    const Key key{owner, request.name};
    {
        const std::lock_guard lock(mutex_);
        if (stopping_) throw unavailable();
        if (templates_.contains(key) || creating_.contains(key)) {
            throw ServiceError(ErrorCode::conflict, "template '" + request.name + "' already exists");
        }
        std::size_t count = 0;
        for (const auto& [k, live] : templates_) count += k.first == owner ? 1U : 0U;
        for (const auto& k : creating_) count += k.first == owner ? 1U : 0U;
        if (count >= settings_.max_per_owner) {
            throw ServiceError(ErrorCode::rate_limited, "template quota reached: this key has " +
                                                            std::to_string(count) + " templates (at most " +
                                                            std::to_string(settings_.max_per_owner) + ")");
        }
        creating_.insert(key);
    }
    auto live = std::make_shared<Live>();
    live->record = record;
    try {
        auto source = open_snapshot(record);  // pins the snapshot
        try {
            live->handle = open_pool(record, std::move(source));
            persist(record);
        } catch (...) {
            live->handle.reset();
            snapshots_.unpin(record.snapshot_id, record.name);
            throw;
        }
    } catch (...) {
        const std::lock_guard lock(mutex_);
        creating_.erase(key);
        throw;
    }
    {
        const std::lock_guard lock(mutex_);
        creating_.erase(key);
        if (!stopping_) {
            templates_[key] = live;
            spdlog::info("templates: '{}' created from snapshot {} (warm {}..{})", record.name,
                         record.snapshot_id, record.pool.min_warm, record.pool.max_warm);
            return info_of(*live);
        }
    }
    live->handle.reset();
    snapshots_.unpin(record.snapshot_id, record.name);
    std::error_code ec;
    fs::remove((fs::path(settings_.root) / (record.id + ".json")).string(), ec);  // shutdown won the race
    throw unavailable();
}

TemplateInfo TemplateCatalog::get(const std::string& owner, const std::string& name) const {
    return info_of(*find(owner, name));
}

std::vector<TemplateInfo> TemplateCatalog::list(const std::string& owner) const {
    std::vector<std::shared_ptr<Live>> mine;
    {
        const std::lock_guard lock(mutex_);
        for (const auto& [key, live] : templates_) {
            if (key.first == owner) mine.push_back(live);
        }
    }
    std::vector<TemplateInfo> out;
    out.reserve(mine.size());
    for (const auto& live : mine) out.push_back(info_of(*live));
    return out;
}

TemplateInfo TemplateCatalog::update(const std::string& owner, const std::string& name,
                                     const UpdateTemplate& request) {
    const auto live = find(owner, name);
    const std::lock_guard operation(live->operation);
    if (live->removed) throw ServiceError::not_found("no template '" + name + "'");
    Record record;
    std::shared_ptr<PoolHandle> old;
    {
        const std::lock_guard lock(live->mutex);
        record = live->record;
        old = live->handle;
    }
    record.pool = checked_sizes(request.min_warm.value_or(record.pool.min_warm),
                                request.max_warm.value_or(record.pool.max_warm));
    // A failed template gets another restore; a working one keeps its zygote.
    std::shared_ptr<VmSource> source = old ? old->source : nullptr;
    if (!source) {
        snapshots_.unpin(record.snapshot_id, record.name);
        try {
            source = open_snapshot(record);
        } catch (const std::exception& e) {
            // Keep it pinned (it is still this template's snapshot) and failed.
            try {
                (void)snapshots_.pin(owner, record.snapshot_id, record.name);
            } catch (const ServiceError&) {  // the snapshot is gone; nothing to pin
            }
            const std::lock_guard lock(live->mutex);
            live->error = e.what();
            throw;
        }
    }
    auto fresh = open_pool(record, std::move(source));
    persist(record);
    {
        const std::lock_guard lock(live->mutex);
        live->record.pool = record.pool;
        live->handle = std::move(fresh);
        live->error.clear();
    }
    if (old) old->pool->shutdown();  // its warm VMs go; leases in progress on it fail with unavailable
    return info_of(*live);
}

void TemplateCatalog::remove(const std::string& owner, const std::string& name) {
    const auto live = find(owner, name);
    const std::lock_guard operation(live->operation);  // waits for an update in progress
    if (live->removed) throw ServiceError::not_found("no template '" + name + "'");
    live->removed = true;
    {
        const std::lock_guard lock(mutex_);
        // Unpinned before the name is free: a new template of that name may
        // pin the same snapshot right after, and must keep its pin.
        snapshots_.unpin(live->record.snapshot_id, live->record.name);
        templates_.erase({owner, name});
    }
    std::error_code ec;
    fs::remove((fs::path(settings_.root) / (live->record.id + ".json")).string(), ec);
    std::shared_ptr<PoolHandle> handle;
    {
        const std::lock_guard lock(live->mutex);
        handle = std::move(live->handle);
    }
    if (handle)
        handle->pool->shutdown();  // drains: warm VMs destroyed, the zygote stops with the last reference
    handle.reset();
    spdlog::info("templates: '{}' deleted; its pool is drained", name);
}

LeasedVm TemplateCatalog::lease(const std::string& owner, const std::string& name,
                                const std::string& identity) {
    const auto live = find(owner, name);
    std::shared_ptr<PoolHandle> handle;
    std::string error;
    {
        const std::lock_guard lock(live->mutex);
        handle = live->handle;
        error = live->error;
    }
    if (!handle) {
        throw ServiceError(ErrorCode::conflict, "template '" + name + "' is failed: " + error);
    }
    try {
        return handle->pool->lease(identity);
    } catch (const ServiceError& e) {
        // An update replaced the pool while this lease waited on the old one: try the new one.
        std::shared_ptr<PoolHandle> now;
        {
            const std::lock_guard lock(live->mutex);
            now = live->handle;
        }
        if (e.code() != ErrorCode::unavailable || !now || now == handle) throw;
        return now->pool->lease(identity);
    }
}

std::vector<PoolInfo> TemplateCatalog::pools(const std::string& owner) const {
    std::vector<PoolInfo> out;
    for (const auto& info : list(owner)) {
        if (info.state != TemplateState::ready) continue;
        out.push_back(PoolInfo{info.name, info.pool.min_warm, info.pool.max_warm, info.stats});
    }
    return out;
}

void TemplateCatalog::shutdown() noexcept {
    std::map<Key, std::shared_ptr<Live>> all;
    {
        const std::lock_guard lock(mutex_);
        if (stopping_) return;
        stopping_ = true;
        all = templates_;
    }
    for (const auto& [key, live] : all) {
        std::shared_ptr<PoolHandle> handle;
        {
            const std::lock_guard lock(live->mutex);
            handle = std::move(live->handle);
        }
        if (handle) handle->pool->shutdown();
    }
}

}  // namespace forkvm::pool
