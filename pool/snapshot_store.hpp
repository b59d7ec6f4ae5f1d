#pragma once
// SnapshotStore: the API's snapshots on disk, one directory each under
// `root` (data_dir/snapshots/<id>/): the snapshot files of
// docs/snapshot-format.md plus meta.json (owner, source sandbox, labels,
// creation time). Snapshots survive restarts: the constructor loads every
// directory it finds, checks it (manifest, sizes, state.bin checksum) and
// lists it again; a directory that fails the check is logged and left alone.
//
// Creating one: a directory ".tmp-<id>" is filled by the caller's writer
// (the VM process writes its snapshot there), checked, given meta.json and
// renamed into place, so a crash never leaves a half snapshot under a real
// id; stale ".tmp-*" directories are removed at start. Deleting renames the
// directory to ".tmp-*" first for the same reason.
//
// Ownership as for sandboxes: another owner's snapshot is not_found. Quotas
// per owner: a number of snapshots and bytes on disk (rate_limited).
// A snapshot a template uses is pinned: deleting it answers conflict.
// Thread-safe; the mutex is never held across file work or a writer.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "pool/catalog_types.hpp"

namespace forkvm::pool {

struct SnapshotStoreSettings {
    std::string root;                                 // created if missing (mode 0700)
    std::size_t max_per_owner = 10;                   // >= 1
    std::uint64_t max_bytes_per_owner = 16ULL << 30;  // allocated bytes on disk; >= 1
};

class SnapshotStore {
public:
    // Fills an empty, not yet existing directory with a snapshot. Throws on failure.
    using Writer = std::function<void(const std::string& dir)>;

    explicit SnapshotStore(SnapshotStoreSettings settings);

    // Runs `writer` into a fresh directory, checks the result (deep = also
    // hash all of memory.bin against the manifest, for snapshots from
    // outside), and adds it. Quotas are checked before (count, bytes already
    // used) and after (bytes of the new one). Errors from the writer
    // propagate unchanged; nothing is left on disk after any failure.
    // `labels` is read after the writer ran, so a writer may fill it in.
    SnapshotInfo create(const std::string& owner, const std::string& source_sandbox, const Labels& labels,
                        const Writer& writer, bool deep_check = false);

    SnapshotInfo get(const std::string& owner, const std::string& id) const;
    std::vector<SnapshotInfo> list(const std::string& owner) const;  // oldest first
    // conflict while a template uses it.
    void remove(const std::string& owner, const std::string& id);

    // What the owner's disk quota still allows.
    [[nodiscard]] std::uint64_t bytes_left(const std::string& owner) const;

    // A template starts using the snapshot: returns its directory. not_found
    // for an unknown id or another owner's.
    std::string pin(const std::string& owner, const std::string& id, const std::string& template_name);
    void unpin(const std::string& id, const std::string& template_name) noexcept;
    // The directory of a snapshot (not_found as get()).
    std::string dir_of(const std::string& owner, const std::string& id) const;

    const SnapshotStoreSettings& settings() const noexcept { return settings_; }

private:
    struct Record {
        SnapshotInfo info;
        std::set<std::string> pins;  // template names
    };
    const Record& find(const std::string& owner, const std::string& id) const;  // requires mutex_
    std::string path_of(const std::string& id) const;
    void load_existing();
    void check_quota(const std::string& owner) const;          // requires mutex_
    std::uint64_t used_bytes(const std::string& owner) const;  // requires mutex_
    static SnapshotInfo with_pins(const Record& record);

    const SnapshotStoreSettings settings_;
    mutable std::mutex mutex_;
    std::map<std::string, Record> records_;       // by id
    std::map<std::string, std::size_t> pending_;  // owner -> creations in progress
};

// Label limits of snapshots (as for sandboxes): count, key and value length.
inline constexpr std::size_t kMaxSnapshotLabels = 32;
inline constexpr std::size_t kMaxLabelKeyLength = 64;
inline constexpr std::size_t kMaxLabelValueLength = 256;
// Throws ServiceError(invalid_argument, field "labels").
void check_snapshot_labels(const Labels& labels);

// Bytes a directory's files take on disk (allocated blocks; sparse files count
// what they hold). 0 for a missing directory.
std::uint64_t disk_usage(const std::string& dir);

}  // namespace forkvm::pool
