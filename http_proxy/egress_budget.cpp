#include "http_proxy/egress_budget.hpp"

#include <algorithm>
#include <utility>

namespace forkvm::http_proxy {

EgressBudget::Slot::~Slot() {
    if (budget_ != nullptr) budget_->release();
}

std::optional<EgressBudget::Slot> EgressBudget::open() {
    std::lock_guard lock(mu_);
    if (open_ >= limits_.max_connections) return std::nullopt;
    ++open_;
    return Slot(this);
}

void EgressBudget::release() {
    std::lock_guard lock(mu_);
    --open_;
}

bool EgressBudget::spend(std::uint64_t bytes) {
    std::lock_guard lock(mu_);
    if (bytes_ > limits_.max_bytes) return false;
    // Saturates just past the limit: no wrap-around, whatever `bytes` is.
    const std::uint64_t room = limits_.max_bytes - bytes_;
    bytes_ = bytes > room ? limits_.max_bytes + 1 : bytes_ + bytes;
    return bytes_ <= limits_.max_bytes;
}

std::uint32_t EgressBudget::open_connections() const {
    std::lock_guard lock(mu_);
    return open_;
}

std::uint64_t EgressBudget::bytes_moved() const {
    std::lock_guard lock(mu_);
    return bytes_;
}

std::string EgressBudget::connections_refusal() const {
    return "this sandbox already has " + std::to_string(limits_.max_connections) +
           " proxied connections open (limits.max_connections)";
}

std::string EgressBudget::bytes_refusal() const {
    return "this sandbox has moved its " + std::to_string(limits_.max_bytes) + " bytes (limits.max_bytes)";
}

ConnectionDeadline::ConnectionDeadline(const Limits& limits, Clock::time_point opened)
    : idle_(limits.idle_timeout_ms),
      total_(limits.total_timeout_ms),
      opened_(opened),
      last_activity_(opened) {}

ConnectionDeadline::Clock::time_point ConnectionDeadline::deadline() const noexcept {
    return std::min(last_activity_ + idle_, opened_ + total_);
}

std::optional<std::string> ConnectionDeadline::expired(Clock::time_point now) const {
    if (now >= opened_ + total_)
        return "the connection reached its total time (" + std::to_string(total_.count()) + " ms)";
    if (now >= last_activity_ + idle_)
        return "the connection was idle for " + std::to_string(idle_.count()) + " ms";
    return std::nullopt;
}

}  // namespace forkvm::http_proxy
