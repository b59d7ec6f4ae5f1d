// The limits of one sandbox's egress (Policy::Limits) as the networking
// half enforces them: EgressBudget is shared by all of a sandbox's proxied
// connections (how many are open, how many bytes they moved, both
// directions); ConnectionDeadline is one connection's idle and total time.
// No clock of their own and no I/O: the relay passes the time in.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <utility>

#include "http_proxy/policy.hpp"

namespace forkvm::http_proxy {

class EgressBudget {
public:
    explicit EgressBudget(const Limits& limits) : limits_(limits) {}

    // One open connection's place in the budget; gives it back when destroyed.
    class Slot {
    public:
        Slot(Slot&& other) noexcept : budget_(std::exchange(other.budget_, nullptr)) {}
        Slot& operator=(Slot&& other) noexcept {
            if (this != &other) {
                if (budget_ != nullptr) budget_->release();
                budget_ = std::exchange(other.budget_, nullptr);
            }
            return *this;
        }
        Slot(const Slot&) = delete;
        Slot& operator=(const Slot&) = delete;
        ~Slot();

    private:
        friend class EgressBudget;
        explicit Slot(EgressBudget* budget) : budget_(budget) {}
        EgressBudget* budget_;
    };

    // A slot for a new connection, or nullopt when max_connections are open
    // (the caller refuses with 429 and connections_refusal()).
    [[nodiscard]] std::optional<Slot> open();
    // Counts `bytes` moved either way. Returns false once the total passed
    // max_bytes: the caller ends the connection, and the budget stays spent
    // (every later call returns false too).
    [[nodiscard]] bool spend(std::uint64_t bytes);

    [[nodiscard]] std::uint32_t open_connections() const;
    [[nodiscard]] std::uint64_t bytes_moved() const;
    [[nodiscard]] const Limits& limits() const noexcept { return limits_; }
    [[nodiscard]] std::string connections_refusal() const;
    [[nodiscard]] std::string bytes_refusal() const;

private:
    void release();

    const Limits limits_;
    mutable std::mutex mu_;
    std::uint32_t open_ = 0;
    std::uint64_t bytes_ = 0;
};

// One connection's deadlines: idle_timeout_ms after the last byte either
// way, total_timeout_ms after it opened, whichever comes first.
class ConnectionDeadline {
public:
    using Clock = std::chrono::steady_clock;

    ConnectionDeadline(const Limits& limits, Clock::time_point opened);
    // A byte moved at `now`: the idle deadline moves on.
    void activity(Clock::time_point now) noexcept { last_activity_ = now; }
    // When the connection must end if nothing else happens.
    [[nodiscard]] Clock::time_point deadline() const noexcept;
    // Why it ended at `now`, or nullopt if it has time left.
    [[nodiscard]] std::optional<std::string> expired(Clock::time_point now) const;

private:
    std::chrono::milliseconds idle_;
    std::chrono::milliseconds total_;
    Clock::time_point opened_;
    Clock::time_point last_activity_;
};

}  // namespace forkvm::http_proxy
