#include "pool/sandbox_registry.hpp"

#include <algorithm>
#include <cstdint>
#include <utility>

#include "pool/service_error.hpp"

namespace forkvm::pool {

namespace {

ServiceError not_found(const std::string& id) { return ServiceError::not_found("no sandbox '" + id + "'"); }

ServiceError expired(const std::string& id) {
    return ServiceError(ErrorCode::expired, "sandbox '" + id + "' expired (its TTL ran out)");
}

// Seconds until `earliest` (when a slot frees up at the
// latest, unless someone deletes first), clamped to [1, 3600].
std::uint32_t seconds_until(TimePoint earliest, TimePoint now) {
    if (earliest <= now) return 1;
    const auto s = std::chrono::ceil<std::chrono::seconds>(earliest - now).count();
    return static_cast<std::uint32_t>(std::clamp<decltype(s)>(s, 1, 3600));
}

}  // namespace

std::string_view to_string(SandboxState state) noexcept {
    switch (state) {
        case SandboxState::starting: return "starting";
        case SandboxState::running: return "running";
        case SandboxState::broken: return "broken";
        case SandboxState::expired: return "expired";
        case SandboxState::deleted: return "deleted";
    }
    return "broken";
}

void validate(const RegistrySettings& settings) {
    if (settings.max_sandboxes < 1)
        throw ServiceError::invalid_argument("sandbox.max_sandboxes", "must be at least 1");
    if (settings.max_per_key < 1)
        throw ServiceError::invalid_argument("sandbox.max_per_key", "must be at least 1");
    if (settings.default_ttl.count() < 1)
        throw ServiceError::invalid_argument("sandbox.default_ttl", "must be positive");
    if (settings.max_ttl < settings.default_ttl) {
        throw ServiceError::invalid_argument("sandbox.max_ttl", "must not be below sandbox.default_ttl");
    }
    if (settings.max_id_length < 1)
        throw ServiceError::invalid_argument("sandbox.max_id_length", "must be at least 1");
}

SandboxRegistry::SandboxRegistry(RegistrySettings settings, Clock clock)
    : settings_(settings),
      clock_(clock ? std::move(clock) : Clock([] { return std::chrono::system_clock::now(); })) {
    validate(settings_);
}

std::chrono::milliseconds SandboxRegistry::checked_ttl(std::optional<std::chrono::milliseconds> ttl) const {
    if (!ttl) return settings_.default_ttl;
    if (ttl->count() < 1) throw ServiceError::invalid_argument("ttl", "must be positive");
    if (*ttl > settings_.max_ttl) {
        throw ServiceError::invalid_argument(
            "ttl", "must not exceed " + std::to_string(settings_.max_ttl.count() / 1000) + " seconds");
    }
    return *ttl;
}

void SandboxRegistry::validate_input(const std::string& id, const Labels& labels) const {
    if (id.empty() || id.size() > settings_.max_id_length) {
        throw ServiceError::invalid_argument(
            "id", "must be 1 to " + std::to_string(settings_.max_id_length) + " characters");
    }
    if (labels.size() > settings_.max_labels) {
        throw ServiceError::invalid_argument("labels",
                                             "at most " + std::to_string(settings_.max_labels) + " labels");
    }
    for (const auto& [key, value] : labels) {
        if (key.empty() || key.size() > settings_.max_label_key_length) {
            throw ServiceError::invalid_argument(
                "labels",
                "label keys must be 1 to " + std::to_string(settings_.max_label_key_length) + " characters");
        }
        if (value.size() > settings_.max_label_value_length) {
            throw ServiceError::invalid_argument(
                "labels", "label values must be at most " + std::to_string(settings_.max_label_value_length) +
                              " characters");
        }
    }
}

SandboxInfo SandboxRegistry::create(const std::string& id, const std::string& owner,
                                    std::optional<std::chrono::milliseconds> ttl, Labels labels) {
    validate_input(id, labels);
    const std::chrono::milliseconds lifetime = checked_ttl(ttl);
    const TimePoint now = clock_();

    const std::lock_guard lock(mutex_);
    if (live_.count(id) != 0 || tombstones_.count(id) != 0) {
        throw ServiceError(ErrorCode::conflict, "sandbox id '" + id + "' is already in use", "id");
    }
    if (live_.size() >= settings_.max_sandboxes) {
        TimePoint earliest = TimePoint::max();
        for (const auto& [other_id, info] : live_) earliest = std::min(earliest, info.expires);
        throw ServiceError::capacity_exhausted("the server runs its maximum number of sandboxes",
                                               seconds_until(earliest, now));
    }
    const auto owned = per_owner_.find(owner);
    if (owned != per_owner_.end() && owned->second >= settings_.max_per_key) {
        TimePoint earliest = TimePoint::max();
        for (const auto& [other_id, info] : live_) {
            if (info.owner == owner) earliest = std::min(earliest, info.expires);
        }
        throw ServiceError(ErrorCode::rate_limited,
                           "this key already has " + std::to_string(settings_.max_per_key) + " sandboxes",
                           std::nullopt, seconds_until(earliest, now));
    }

    SandboxInfo info;
    info.id = id;
    info.owner = owner;
    info.state = SandboxState::starting;
    info.labels = std::move(labels);
    info.created = now;
    info.expires = now + lifetime;
    live_.emplace(id, info);
    ++per_owner_[owner];
    return info;
}

const SandboxInfo& SandboxRegistry::live_for_owner(const std::string& id, const std::string& owner,
                                                   TimePoint now) const {
    const auto it = live_.find(id);
    if (it != live_.end()) {
        if (it->second.owner != owner) throw not_found(id);
        if (it->second.expires <= now) throw expired(id);  // due, not swept yet
        return it->second;
    }
    const auto tomb = tombstones_.find(id);
    if (tomb != tombstones_.end() && tomb->second.owner == owner) throw expired(id);
    throw not_found(id);
}

SandboxInfo SandboxRegistry::get(const std::string& id, const std::string& owner) const {
    const TimePoint now = clock_();
    const std::lock_guard lock(mutex_);
    return live_for_owner(id, owner, now);
}

std::vector<SandboxInfo> SandboxRegistry::list(const std::string& owner) const {
    const TimePoint now = clock_();
    std::vector<SandboxInfo> out;
    {
        const std::lock_guard lock(mutex_);
        for (const auto& [id, info] : live_) {
            if (info.owner == owner && info.expires > now) out.push_back(info);
        }
    }
    std::sort(out.begin(), out.end(), [](const SandboxInfo& a, const SandboxInfo& b) {
        return a.created != b.created ? a.created < b.created : a.id < b.id;
    });
    return out;
}

SandboxInfo SandboxRegistry::keep_alive(const std::string& id, const std::string& owner,
                                        std::optional<std::chrono::milliseconds> ttl) {
    const std::chrono::milliseconds lifetime = checked_ttl(ttl);
    const TimePoint now = clock_();
    const std::lock_guard lock(mutex_);
    const SandboxInfo& found = live_for_owner(id, owner, now);
    if (found.state == SandboxState::broken) {
        throw ServiceError(ErrorCode::vm_broken, "sandbox '" + id + "' is broken: " + found.broken_reason);
    }
    SandboxInfo& info = live_.at(id);
    info.expires = std::max(info.expires, now + lifetime);
    return info;
}

void SandboxRegistry::mark_running(const std::string& id) {
    const std::lock_guard lock(mutex_);
    const auto it = live_.find(id);
    if (it == live_.end()) throw not_found(id);
    if (it->second.state == SandboxState::starting) it->second.state = SandboxState::running;
}

void SandboxRegistry::mark_broken(const std::string& id, std::string reason) {
    const std::lock_guard lock(mutex_);
    const auto it = live_.find(id);
    if (it == live_.end()) throw not_found(id);
    it->second.state = SandboxState::broken;
    it->second.broken_reason = std::move(reason);
}

SandboxInfo SandboxRegistry::remove(const std::string& id, const std::string& owner) {
    const TimePoint now = clock_();
    const std::lock_guard lock(mutex_);
    live_for_owner(id, owner, now);  // throws not_found / expired
    auto node = live_.extract(id);
    SandboxInfo info = std::move(node.mapped());
    if (--per_owner_[info.owner] == 0) per_owner_.erase(info.owner);
    info.state = SandboxState::deleted;
    return info;
}

void SandboxRegistry::erase(const std::string& id) noexcept {
    const std::lock_guard lock(mutex_);
    const auto it = live_.find(id);
    if (it == live_.end()) return;
    const auto owned = per_owner_.find(it->second.owner);
    if (owned != per_owner_.end() && --owned->second == 0) per_owner_.erase(owned);
    live_.erase(it);
}

void SandboxRegistry::add_tombstone(SandboxInfo info) {
    std::string id = info.id;
    if (tombstones_.emplace(id, std::move(info)).second) tombstone_order_.push_back(std::move(id));
}

void SandboxRegistry::prune_tombstones(TimePoint now) {
    while (!tombstone_order_.empty()) {
        const auto it = tombstones_.find(tombstone_order_.front());
        const bool too_many = tombstones_.size() > settings_.max_tombstones;
        const bool too_old = it == tombstones_.end() || it->second.expires + settings_.tombstone_ttl <= now;
        if (!too_many && !too_old) break;
        if (it != tombstones_.end()) tombstones_.erase(it);
        tombstone_order_.pop_front();
    }
}

std::vector<SandboxInfo> SandboxRegistry::expire_due(TimePoint now) {
    std::vector<SandboxInfo> due;
    const std::lock_guard lock(mutex_);
    for (auto it = live_.begin(); it != live_.end();) {
        if (it->second.expires > now) {
            ++it;
            continue;
        }
        SandboxInfo info = std::move(it->second);
        it = live_.erase(it);
        const auto owned = per_owner_.find(info.owner);
        if (owned != per_owner_.end() && --owned->second == 0) per_owner_.erase(owned);
        info.state = SandboxState::expired;
        due.push_back(std::move(info));
    }
    // Oldest expiry first, so tombstone pruning drops the oldest ones.
    std::sort(due.begin(), due.end(), [](const SandboxInfo& a, const SandboxInfo& b) {
        return a.expires != b.expires ? a.expires < b.expires : a.id < b.id;
    });
    for (const SandboxInfo& info : due) add_tombstone(info);
    prune_tombstones(now);
    return due;
}

std::size_t SandboxRegistry::live_count() const {
    const std::lock_guard lock(mutex_);
    return live_.size();
}

std::size_t SandboxRegistry::live_count(const std::string& owner) const {
    const std::lock_guard lock(mutex_);
    const auto it = per_owner_.find(owner);
    return it == per_owner_.end() ? 0 : it->second;
}

}  // namespace forkvm::pool
