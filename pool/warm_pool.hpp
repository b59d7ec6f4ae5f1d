#pragma once
// WarmPool: a queue of paused, pre-forked VMs so that handing out a sandbox
// costs a queue pop, not a fork.
//
// Design:
// - `refill_concurrency` worker threads each loop "wait until a fork is
//   wanted, fork outside the lock, push the result". So at most that many
//   forks run at once, and the mutex is never held across a fork, a health
//   check, a resume or a destroy.
// - A fork is wanted while warm + in_flight < min(max_warm, min_warm +
//   waiting_leases): the pool keeps min_warm ready and forks on demand for
//   leases that are waiting, but never holds more than max_warm VMs.
// - A failed fork is counted and retried after an exponential backoff
//   (reset on the next success); it never ends a thread.
// - lease() pops a VM, checks healthy() (an unhealthy one is destroyed and
//   the next one tried), resumes it, and returns it wrapped in a LeasedVm
//   that destroys the VM when it goes away. With nothing warm it waits up to
//   the deadline (capped by lease_wait) and then throws capacity_exhausted
//   with a retry-after hint.
// - shutdown() stops the workers, wakes waiting leases (they throw
//   unavailable), waits for them to leave, then destroys every warm VM.
//   Leased VMs belong to their LeasedVm holders and are not touched.

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "pool/vm_source.hpp"

namespace forkvm::pool {

struct PoolSettings {
    std::string name = "default";                    // in log lines
    std::size_t min_warm = 2;                        // kept ready even when nobody asks
    std::size_t max_warm = 4;                        // never more warm + forking than this; >= 1
    std::size_t refill_concurrency = 1;              // forks at once; >= 1
    std::chrono::milliseconds lease_wait{2000};      // longest a lease waits for a refill
    std::chrono::milliseconds backoff_initial{100};  // first retry delay after a failed fork
    std::chrono::milliseconds backoff_max{10000};    // cap of the doubling retry delay
};

// Throws ServiceError(invalid_argument) naming the offending field.
void validate(const PoolSettings& settings);

// Upper bounds (inclusive) of the lease latency histogram buckets, in
// microseconds; one more bucket counts everything above the last bound.
inline constexpr std::array<std::uint64_t, 7> lease_latency_bounds_us = {
    100, 1'000, 10'000, 100'000, 1'000'000, 10'000'000, 60'000'000};

struct PoolStats {
    std::size_t warm = 0;                   // paused VMs ready to lease
    std::size_t forking = 0;                // forks in flight
    std::size_t leased = 0;                 // LeasedVm handles alive
    std::uint64_t forks = 0;                // successful forks
    std::uint64_t fork_failures = 0;        // failed forks (each retried after backoff)
    std::uint64_t unhealthy_discarded = 0;  // popped VMs that failed healthy()/resume()
    std::uint64_t leases = 0;               // successful lease() calls
    std::uint64_t lease_timeouts = 0;       // lease() calls that threw capacity_exhausted
    std::uint64_t lease_latency_sum_us = 0;
    std::array<std::uint64_t, lease_latency_bounds_us.size() + 1> lease_latency_buckets{};
};

// A leased, running VM. Move-only; destroys the VM when released or
// destroyed, and keeps the pool's "leased" gauge right even if it outlives
// the pool.
class LeasedVm {
public:
    LeasedVm() = default;
    LeasedVm(std::unique_ptr<PooledVm> vm, std::shared_ptr<std::atomic<std::size_t>> leased_gauge) noexcept;
    LeasedVm(LeasedVm&& other) noexcept = default;
    LeasedVm& operator=(LeasedVm&& other) noexcept;
    LeasedVm(const LeasedVm&) = delete;
    LeasedVm& operator=(const LeasedVm&) = delete;
    ~LeasedVm();

    explicit operator bool() const noexcept { return vm_ != nullptr; }
    PooledVm& vm() const noexcept { return *vm_; }
    PooledVm* operator->() const noexcept { return vm_.get(); }
    // Destroy the VM now (idempotent).
    void release() noexcept;

private:
    std::unique_ptr<PooledVm> vm_;
    std::shared_ptr<std::atomic<std::size_t>> leased_gauge_;
};

class WarmPool {
public:
    using IdGenerator = std::function<std::string()>;

    // Starts the refill threads at once. `source` must outlive the pool.
    // `make_id` names each fork (default: random_id("vm-")).
    WarmPool(VmSource& source, PoolSettings settings, IdGenerator make_id = {});
    ~WarmPool();
    WarmPool(const WarmPool&) = delete;
    WarmPool& operator=(const WarmPool&) = delete;

    // Take a warm VM, resumed. Waits until min(deadline, now + lease_wait).
    // Throws ServiceError: capacity_exhausted (with retry-after) when nothing
    // became ready in time, unavailable after shutdown().
    // `identity` (if not empty) becomes the VM's hostname as it resumes:
    // the sandbox id, which a VM forked ahead of time could not know.
    LeasedVm lease(std::chrono::steady_clock::time_point deadline, const std::string& identity = {});
    LeasedVm lease(const std::string& identity = {});  // waits up to lease_wait

    PoolStats stats() const;
    const PoolSettings& settings() const noexcept { return settings_; }

    // Block until warm >= n or the timeout passes; true if reached. Meant for
    // readiness checks at startup and for tests.
    bool wait_warm(std::size_t n, std::chrono::milliseconds timeout) const;

    // Stop refilling, fail waiting leases, destroy every warm VM, join the
    // threads. Idempotent; the destructor calls it.
    void shutdown() noexcept;

private:
    void refill_loop();
    bool fork_wanted() const;                                                // requires mutex_
    std::uint32_t retry_after_seconds() const;                               // requires mutex_
    void record_lease_latency(std::chrono::steady_clock::duration latency);  // requires mutex_

    VmSource& source_;
    const PoolSettings settings_;
    IdGenerator make_id_;

    mutable std::mutex mutex_;
    std::condition_variable refill_cv_;         // workers: a fork may be wanted / shutdown
    mutable std::condition_variable ready_cv_;  // leases: a VM became warm / shutdown
    std::condition_variable idle_cv_;           // shutdown: active leases left
    std::deque<std::unique_ptr<PooledVm>> warm_;
    std::size_t in_flight_ = 0;
    std::size_t waiting_ = 0;        // lease() calls blocked for a VM
    std::size_t active_leases_ = 0;  // lease() calls inside the pool
    bool stopping_ = false;
    std::chrono::milliseconds backoff_{0};
    std::chrono::steady_clock::time_point backoff_until_{};
    PoolStats stats_;
    std::shared_ptr<std::atomic<std::size_t>> leased_gauge_;

    std::mutex shutdown_mutex_;  // serialises shutdown() callers
    std::vector<std::thread> workers_;
};

}  // namespace forkvm::pool
