#pragma once
// SandboxRegistry: the bookkeeping of sandboxes — who owns which id, its
// state, labels and TTL — and the caps on how many may exist. It holds no
// VMs: the caller keeps each sandbox's LeasedVm next to its id and destroys
// it when expire_due() or remove() hands the sandbox back.
//
// Rules:
// - Ids are unique. A lookup of an unknown id, of a deleted one, or of
//   another owner's id answers not_found (never "forbidden": that would
//   confirm the id exists).
// - A sandbox past its expiry answers expired to its owner, both before and
//   after expire_due() swept it. Swept sandboxes are kept as bounded
//   tombstones (count and age) so "expired" can be told from "not_found".
// - TTL: default_ttl when none is asked for; more than max_ttl is rejected.
//   keep_alive() sets expiry to now + ttl (never shortening it).
// - Caps: starting/running/broken sandboxes count. At max_sandboxes,
//   create() throws capacity_exhausted; at max_per_key for that owner it
//   throws rate_limited. Both carry a retry-after hint.
// - Time comes from an injectable clock, so tests need not sleep.
// Thread-safe: every method takes one mutex and never calls out under it.

#include <chrono>
#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace forkvm::pool {

enum class SandboxState { starting, running, broken, expired, deleted };

std::string_view to_string(SandboxState state) noexcept;

using Labels = std::map<std::string, std::string>;
using TimePoint = std::chrono::system_clock::time_point;

struct SandboxInfo {
    std::string id;
    std::string owner;  // the API key (or its id) that created it
    SandboxState state = SandboxState::starting;
    std::string broken_reason;  // set when state == broken
    Labels labels;
    TimePoint created{};
    TimePoint expires{};
    bool operator==(const SandboxInfo&) const = default;
};

struct RegistrySettings {
    std::size_t max_sandboxes = 100;  // live sandboxes in total; >= 1
    std::size_t max_per_key = 20;     // live sandboxes per owner; >= 1
    std::chrono::milliseconds default_ttl{std::chrono::minutes(5)};
    std::chrono::milliseconds max_ttl{std::chrono::hours(1)};
    // Expired tombstones kept to answer "expired" rather than "not_found".
    std::size_t max_tombstones = 10'000;
    std::chrono::milliseconds tombstone_ttl{std::chrono::hours(1)};
    // Input limits (ids and labels come from clients).
    std::size_t max_id_length = 128;
    std::size_t max_labels = 32;
    std::size_t max_label_key_length = 64;
    std::size_t max_label_value_length = 256;
};

// Throws ServiceError(invalid_argument) naming the offending field.
void validate(const RegistrySettings& settings);

class SandboxRegistry {
public:
    using Clock = std::function<TimePoint()>;

    explicit SandboxRegistry(RegistrySettings settings, Clock clock = {});

    // Reserve a new sandbox in state `starting`. ttl: nullopt = default_ttl.
    // Throws invalid_argument (id, ttl, labels), conflict (id in use),
    // capacity_exhausted, rate_limited.
    SandboxInfo create(const std::string& id, const std::string& owner,
                       std::optional<std::chrono::milliseconds> ttl, Labels labels = {});

    // Lookups by the owner. Throw not_found or expired (see rules above).
    SandboxInfo get(const std::string& id, const std::string& owner) const;
    // Live sandboxes of one owner, oldest first.
    std::vector<SandboxInfo> list(const std::string& owner) const;

    // Extend the TTL: expiry = max(current, now + ttl). Throws as get(), plus
    // invalid_argument (ttl) and vm_broken for a broken sandbox.
    SandboxInfo keep_alive(const std::string& id, const std::string& owner,
                           std::optional<std::chrono::milliseconds> ttl = std::nullopt);

    // State changes made by the service (no owner check: internal calls).
    // Throw not_found for an id that is not live.
    void mark_running(const std::string& id);
    void mark_broken(const std::string& id, std::string reason);

    // Delete by the owner; returns the record with state deleted. The caller
    // destroys the VM. Throws as get().
    SandboxInfo remove(const std::string& id, const std::string& owner);
    // Internal rollback (e.g. the lease failed after create()); no-op if absent.
    void erase(const std::string& id) noexcept;

    // Move every live sandbox whose expiry is <= now to state expired and
    // return them, oldest expiry first (the caller destroys their VMs). Also
    // prunes old tombstones.
    std::vector<SandboxInfo> expire_due(TimePoint now);

    std::size_t live_count() const;
    std::size_t live_count(const std::string& owner) const;
    const RegistrySettings& settings() const noexcept { return settings_; }

private:
    std::chrono::milliseconds checked_ttl(std::optional<std::chrono::milliseconds> ttl) const;
    void validate_input(const std::string& id, const Labels& labels) const;
    // The live record for (id, owner) or a thrown not_found/expired. Requires mutex_.
    const SandboxInfo& live_for_owner(const std::string& id, const std::string& owner, TimePoint now) const;
    void add_tombstone(SandboxInfo info);  // requires mutex_
    void prune_tombstones(TimePoint now);  // requires mutex_

    const RegistrySettings settings_;
    Clock clock_;
    mutable std::mutex mutex_;
    std::unordered_map<std::string, SandboxInfo> live_;
    std::unordered_map<std::string, std::size_t> per_owner_;
    std::unordered_map<std::string, SandboxInfo> tombstones_;
    std::deque<std::string> tombstone_order_;  // oldest first, for pruning
};

}  // namespace forkvm::pool
