#pragma once
// Requests per second per API key: a token bucket per owner (rate tokens a
// second, up to `burst` saved). Checked on the io thread right after the
// key is known, so a key over its rate costs the server one map lookup and
// a short 429 (with Retry-After), never a worker. Owners are the configured
// keys, so the map stays small. rate 0 = no limit.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace forkvm::server {

class RateLimiter {
public:
    using Clock = std::chrono::steady_clock;

    RateLimiter(double per_second, double burst) : rate_(per_second), burst_(burst < 1 ? 1 : burst) {}

    // nullopt: allowed (one token taken). Otherwise the whole seconds until
    // a token is back (at least 1), for Retry-After.
    std::optional<std::uint32_t> take(const std::string& owner, Clock::time_point now = Clock::now()) {
        if (rate_ <= 0) return std::nullopt;
        const std::lock_guard lock(mutex_);
        auto [it, fresh] = buckets_.try_emplace(owner, Bucket{burst_, now});
        Bucket& b = it->second;
        if (!fresh) {
            const double elapsed = std::chrono::duration<double>(now - b.last).count();
            if (elapsed > 0) b.tokens = std::min(burst_, b.tokens + elapsed * rate_);
            b.last = std::max(b.last, now);
        }
        if (b.tokens >= 1) {
            b.tokens -= 1;
            return std::nullopt;
        }
        const double wait = (1 - b.tokens) / rate_;
        return static_cast<std::uint32_t>(std::max(1.0, std::ceil(wait)));
    }

private:
    struct Bucket {
        double tokens;
        Clock::time_point last;
    };
    const double rate_;
    const double burst_;
    std::mutex mutex_;
    std::unordered_map<std::string, Bucket> buckets_;
};

}  // namespace forkvm::server
