#include "pool/snapshot_store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "pool/private_dir.hpp"
#include "pool/random_id.hpp"
#include "pool/service_error.hpp"
#include "snapshot/file_io.hpp"
#include "snapshot/manifest.hpp"
#include "snapshot/snapshot_error.hpp"

namespace forkvm::pool {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kMetaFileName = "meta.json";
constexpr std::size_t kMaxMetaSize = 1024 * 1024;  // far above what labels_ok() lets in
constexpr int kMetaFormat = 1;
constexpr std::string_view kTmpPrefix = ".tmp-";

bool valid_snapshot_id(std::string_view id) {
    if (!id.starts_with("snap-") || id.size() != 5 + 16) return false;
    return std::all_of(id.begin() + 5, id.end(),
                       [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

std::int64_t to_unix_ms(TimePoint t) {
    return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

std::string meta_json(const SnapshotInfo& info) {
    nlohmann::ordered_json j;
    j["format"] = kMetaFormat;
    j["id"] = info.id;
    j["owner"] = info.owner;
    j["source_sandbox"] = info.source_sandbox;
    j["labels"] = info.labels;
    j["created_unix_ms"] = to_unix_ms(info.created);
    return j.dump() + "\n";
}

// Throws std::runtime_error naming what is wrong.
SnapshotInfo meta_from_json(const std::string& text) {
    const auto j = nlohmann::json::parse(text);  // throws on malformed input
    if (!j.is_object() || j.value("format", 0) != kMetaFormat)
        throw std::runtime_error("unknown meta.json format");
    SnapshotInfo info;
    info.id = j.at("id").get<std::string>();
    info.owner = j.at("owner").get<std::string>();
    info.source_sandbox = j.at("source_sandbox").get<std::string>();
    info.labels = j.at("labels").get<Labels>();
    info.created = TimePoint(std::chrono::milliseconds(j.at("created_unix_ms").get<std::int64_t>()));
    return info;
}

void write_text_atomic(const std::string& path, const std::string& text) {
    snapshot::write_file_atomic(path,
                                std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

void sync_dir(const std::string& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)::fsync(fd);
    ::close(fd);
}

void remove_quietly(const std::string& dir) noexcept {
    std::error_code ec;
    fs::remove_all(dir, ec);
    if (ec) spdlog::warn("snapshots: could not remove {}: {}", dir, ec.message());
}

}  // namespace

std::uint64_t disk_usage(const std::string& dir) {
    std::uint64_t total = 0;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        struct stat st {};
        if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
            total += static_cast<std::uint64_t>(st.st_blocks) * 512U;
        }
    }
    return total;
}

SnapshotStore::SnapshotStore(SnapshotStoreSettings settings) : settings_(std::move(settings)) {
    if (settings_.root.empty()) throw ServiceError::invalid_argument("data_dir", "no snapshot folder given");
    if (settings_.max_per_owner < 1)
        throw ServiceError::invalid_argument("snapshot.max_per_key", "must be at least 1");
    if (settings_.max_bytes_per_owner < 1) {
        throw ServiceError::invalid_argument("snapshot.max_bytes_per_key", "must be at least 1");
    }
    ensure_private_dir(settings_.root);
    load_existing();
}

std::string SnapshotStore::path_of(const std::string& id) const {
    return (fs::path(settings_.root) / id).string();
}

void SnapshotStore::load_existing() {
    std::error_code ec;
    std::vector<fs::path> dirs;
    for (fs::directory_iterator it(settings_.root, ec), end; !ec && it != end; it.increment(ec)) {
        dirs.push_back(it->path());
    }
    std::sort(dirs.begin(), dirs.end());
    for (const auto& path : dirs) {
        const std::string name = path.filename().string();
        if (name.starts_with(kTmpPrefix)) {
            spdlog::info("snapshots: removing {} (left by an interrupted create or delete)", path.string());
            remove_quietly(path.string());
            continue;
        }
        if (!valid_snapshot_id(name)) {
            spdlog::warn("snapshots: ignoring {}: not a snapshot directory name", path.string());
            continue;
        }
        try {
            const auto bytes = snapshot::read_file_capped((path / kMetaFileName).string(), kMaxMetaSize);
            SnapshotInfo info = meta_from_json(std::string(bytes.begin(), bytes.end()));
            if (info.id != name) throw std::runtime_error("meta.json names another id (" + info.id + ")");
            const auto verified = snapshot::verify_snapshot_dir(path.string(), false);
            info.memory_bytes = verified.manifest.memory_size;
            info.disk_bytes = disk_usage(path.string());
            const std::string id = info.id;
            records_[id] = Record{std::move(info), {}};
        } catch (const std::exception& e) {
            spdlog::warn("snapshots: skipping {}: {} (left on disk; remove it or fix it and restart)",
                         path.string(), e.what());
        }
    }
    if (!records_.empty()) spdlog::info("snapshots: {} loaded from {}", records_.size(), settings_.root);
}

std::uint64_t SnapshotStore::used_bytes(const std::string& owner) const {
    std::uint64_t total = 0;
    for (const auto& [id, record] : records_) {
        if (record.info.owner == owner) total += record.info.disk_bytes;
    }
    return total;
}

void SnapshotStore::check_quota(const std::string& owner) const {
    std::size_t count = 0;
    for (const auto& [id, record] : records_) count += record.info.owner == owner ? 1U : 0U;
    const auto pending = pending_.find(owner);
    if (pending != pending_.end()) count += pending->second;
    if (count >= settings_.max_per_owner) {
        throw ServiceError(ErrorCode::rate_limited, "snapshot quota reached: this key has " +
                                                        std::to_string(count) + " snapshots (at most " +
                                                        std::to_string(settings_.max_per_owner) +
                                                        "); delete one first");
    }
    const auto used = used_bytes(owner);
    if (used >= settings_.max_bytes_per_owner) {
        throw ServiceError(ErrorCode::rate_limited, "snapshot disk quota reached: this key's snapshots use " +
                                                        std::to_string(used) + " bytes (at most " +
                                                        std::to_string(settings_.max_bytes_per_owner) +
                                                        "); delete one first");
    }
}

void check_snapshot_labels(const Labels& labels) {
    if (labels.size() > kMaxSnapshotLabels) {
        throw ServiceError::invalid_argument("labels",
                                             "at most " + std::to_string(kMaxSnapshotLabels) + " labels");
    }
    for (const auto& [key, value] : labels) {
        if (key.empty() || key.size() > kMaxLabelKeyLength || value.size() > kMaxLabelValueLength) {
            throw ServiceError::invalid_argument(
                "labels", "label keys must be 1 to " + std::to_string(kMaxLabelKeyLength) +
                              " characters, values at most " + std::to_string(kMaxLabelValueLength));
        }
    }
}

std::uint64_t SnapshotStore::bytes_left(const std::string& owner) const {
    const std::lock_guard lock(mutex_);
    const auto used = used_bytes(owner);
    return used >= settings_.max_bytes_per_owner ? 0 : settings_.max_bytes_per_owner - used;
}

SnapshotInfo SnapshotStore::create(const std::string& owner, const std::string& source_sandbox,
                                   const Labels& labels, const Writer& writer, bool deep_check) {
    check_snapshot_labels(labels);
    {
        const std::lock_guard lock(mutex_);
        check_quota(owner);
        ++pending_[owner];
    }
    const auto done_pending = [&] {
        const std::lock_guard lock(mutex_);
        if (--pending_[owner] == 0) pending_.erase(owner);
    };
    SnapshotInfo info;
    info.id = random_id("snap-");
    info.owner = owner;
    info.source_sandbox = source_sandbox;
    info.created = std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
    const std::string tmp = (fs::path(settings_.root) / (std::string(kTmpPrefix) + info.id)).string();
    try {
        writer(tmp);
        check_snapshot_labels(labels);
        info.labels = labels;  // after the writer: an import's writer fills them in
        const auto verified = snapshot::verify_snapshot_dir(tmp, deep_check);
        info.memory_bytes = verified.manifest.memory_size;
        write_text_atomic((fs::path(tmp) / kMetaFileName).string(), meta_json(info));
        info.disk_bytes = disk_usage(tmp);
        {
            const std::lock_guard lock(mutex_);
            const auto used = used_bytes(owner);
            if (used + info.disk_bytes > settings_.max_bytes_per_owner) {
                throw ServiceError(ErrorCode::rate_limited,
                                   "snapshot disk quota: this snapshot takes " +
                                       std::to_string(info.disk_bytes) + " bytes, this key's others " +
                                       std::to_string(used) + " (at most " +
                                       std::to_string(settings_.max_bytes_per_owner) + ")");
            }
            if (::rename(tmp.c_str(), path_of(info.id).c_str()) != 0) {
                throw snapshot::SnapshotError(snapshot::SnapshotErrorKind::io, tmp,
                                              std::string("rename into place: ") + std::strerror(errno));
            }
            records_[info.id] = Record{info, {}};
            if (--pending_[owner] == 0) pending_.erase(owner);
        }
        sync_dir(settings_.root);
    } catch (...) {
        remove_quietly(tmp);
        done_pending();
        throw;
    }
    return info;
}

const SnapshotStore::Record& SnapshotStore::find(const std::string& owner, const std::string& id) const {
    const auto it = records_.find(id);
    if (it == records_.end() || it->second.info.owner != owner) {
        throw ServiceError::not_found("no snapshot '" + id + "'");
    }
    return it->second;
}

SnapshotInfo SnapshotStore::with_pins(const Record& record) {
    SnapshotInfo info = record.info;
    info.templates.assign(record.pins.begin(), record.pins.end());
    return info;
}

SnapshotInfo SnapshotStore::get(const std::string& owner, const std::string& id) const {
    const std::lock_guard lock(mutex_);
    return with_pins(find(owner, id));
}

std::vector<SnapshotInfo> SnapshotStore::list(const std::string& owner) const {
    std::vector<SnapshotInfo> out;
    {
        const std::lock_guard lock(mutex_);
        for (const auto& [id, record] : records_) {
            if (record.info.owner == owner) out.push_back(with_pins(record));
        }
    }
    std::stable_sort(out.begin(), out.end(),
                     [](const SnapshotInfo& a, const SnapshotInfo& b) { return a.created < b.created; });
    return out;
}

void SnapshotStore::remove(const std::string& owner, const std::string& id) {
    const std::string doomed =
        (fs::path(settings_.root) / (std::string(kTmpPrefix) + "deleted-" + id)).string();
    {
        const std::lock_guard lock(mutex_);
        const Record& record = find(owner, id);
        if (!record.pins.empty()) {
            std::string names;
            for (const auto& name : record.pins) names += (names.empty() ? "" : ", ") + name;
            throw ServiceError(ErrorCode::conflict, "snapshot '" + id + "' is used by template(s) " + names +
                                                        "; delete them first");
        }
        // Renamed under the lock: once the record is gone, the id is free.
        if (::rename(path_of(id).c_str(), doomed.c_str()) != 0) {
            throw ServiceError::internal("cannot delete snapshot '" + id + "': " + std::strerror(errno));
        }
        records_.erase(id);
    }
    // VMs still mapping memory.bin keep their pages: unlinking does not touch them.
    remove_quietly(doomed);
}

std::string SnapshotStore::pin(const std::string& owner, const std::string& id,
                               const std::string& template_name) {
    const std::lock_guard lock(mutex_);
    find(owner, id);
    records_[id].pins.insert(template_name);
    return path_of(id);
}

void SnapshotStore::unpin(const std::string& id, const std::string& template_name) noexcept {
    const std::lock_guard lock(mutex_);
    const auto it = records_.find(id);
    if (it != records_.end()) it->second.pins.erase(template_name);
}

std::string SnapshotStore::dir_of(const std::string& owner, const std::string& id) const {
    const std::lock_guard lock(mutex_);
    find(owner, id);
    return path_of(id);
}

}  // namespace forkvm::pool
