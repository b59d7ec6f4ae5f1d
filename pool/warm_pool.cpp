#include "pool/warm_pool.hpp"

#include <algorithm>
#include <spdlog/spdlog.h>
#include <utility>

#include "pool/random_id.hpp"
#include "pool/service_error.hpp"

namespace forkvm::pool {

namespace {

using Clock = std::chrono::steady_clock;

ServiceError unavailable() { return ServiceError(ErrorCode::unavailable, "the VM pool is shutting down"); }

}  // namespace

void validate(const PoolSettings& settings) {
    if (settings.max_warm < 1) throw ServiceError::invalid_argument("pool.max_warm", "must be at least 1");
    if (settings.min_warm > settings.max_warm) {
        throw ServiceError::invalid_argument("pool.min_warm", "must not exceed pool.max_warm");
    }
    if (settings.refill_concurrency < 1) {
        throw ServiceError::invalid_argument("pool.refill_concurrency", "must be at least 1");
    }
    if (settings.lease_wait.count() < 0) {
        throw ServiceError::invalid_argument("pool.lease_wait", "must not be negative");
    }
    if (settings.backoff_initial.count() < 1) {
        throw ServiceError::invalid_argument("pool.backoff_initial", "must be at least 1 ms");
    }
    if (settings.backoff_max < settings.backoff_initial) {
        throw ServiceError::invalid_argument("pool.backoff_max", "must not be below pool.backoff_initial");
    }
}

// ---- LeasedVm -------------------------------------------------------------

LeasedVm::LeasedVm(std::unique_ptr<PooledVm> vm,
                   std::shared_ptr<std::atomic<std::size_t>> leased_gauge) noexcept
    : vm_(std::move(vm)), leased_gauge_(std::move(leased_gauge)) {}

LeasedVm& LeasedVm::operator=(LeasedVm&& other) noexcept {
    if (this != &other) {
        release();
        vm_ = std::move(other.vm_);
        leased_gauge_ = std::move(other.leased_gauge_);
    }
    return *this;
}

LeasedVm::~LeasedVm() { release(); }

void LeasedVm::release() noexcept {
    if (!vm_) return;
    vm_->destroy();
    vm_.reset();
    if (leased_gauge_) leased_gauge_->fetch_sub(1);
}

// ---- WarmPool -------------------------------------------------------------

WarmPool::WarmPool(VmSource& source, PoolSettings settings, IdGenerator make_id)
    : source_(source),
      settings_(settings),
      make_id_(make_id ? std::move(make_id) : IdGenerator([] { return random_id("vm-"); })),
      leased_gauge_(std::make_shared<std::atomic<std::size_t>>(0)) {
    validate(settings_);
    workers_.reserve(settings_.refill_concurrency);
    try {
        for (std::size_t i = 0; i < settings_.refill_concurrency; ++i)
            workers_.emplace_back([this] { refill_loop(); });
    } catch (...) {
        shutdown();  // join the threads that did start before reporting
        throw;
    }
}

WarmPool::~WarmPool() { shutdown(); }

bool WarmPool::fork_wanted() const {
    if (stopping_) return false;
    const std::size_t target = std::min(settings_.max_warm, settings_.min_warm + waiting_);
    return warm_.size() + in_flight_ < target;
}

std::uint32_t WarmPool::retry_after_seconds() const {
    // While forks fail, the next attempt is at backoff_until_; otherwise a
    // refill is normally well under a second away.
    const auto now = Clock::now();
    if (backoff_until_ <= now) return 1;
    const auto wait = std::chrono::ceil<std::chrono::seconds>(backoff_until_ - now).count();
    return static_cast<std::uint32_t>(std::clamp<decltype(wait)>(wait, 1, 3600));
}

void WarmPool::record_lease_latency(Clock::duration latency) {
    const auto us_signed = std::chrono::duration_cast<std::chrono::microseconds>(latency).count();
    const auto us = static_cast<std::uint64_t>(std::max<decltype(us_signed)>(us_signed, 0));
    stats_.lease_latency_sum_us += us;
    std::size_t bucket = 0;
    while (bucket < lease_latency_bounds_us.size() && us > lease_latency_bounds_us[bucket]) ++bucket;
    ++stats_.lease_latency_buckets[bucket];
}

void WarmPool::refill_loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
        refill_cv_.wait(lock, [this] { return stopping_ || fork_wanted(); });
        if (stopping_) return;
        if (Clock::now() < backoff_until_) {
            // A recent fork failed: wait out the backoff (or shutdown), then re-check.
            const auto until = backoff_until_;
            refill_cv_.wait_until(lock, until, [this] { return stopping_; });
            continue;
        }

        ++in_flight_;
        lock.unlock();
        std::unique_ptr<PooledVm> vm;
        std::string failure;
        try {
            vm = source_.fork_paused(make_id_());
        } catch (const std::exception& e) {
            vm.reset();  // counted as a failure below; a fork error never ends the thread
            failure = e.what();
        } catch (...) {
            vm.reset();
            failure = "unknown exception";
        }
        lock.lock();
        --in_flight_;

        if (!vm) {
            ++stats_.fork_failures;
            backoff_ = backoff_.count() == 0 ? settings_.backoff_initial
                                             : std::min(backoff_ * 2, settings_.backoff_max);
            backoff_until_ = Clock::now() + backoff_;
            // At most one line per backoff period: the backoff paces the retries.
            spdlog::warn("pool {}: fork failed (retry in {} ms): {}", settings_.name, backoff_.count(),
                         failure.empty() ? "no VM returned" : failure);
            continue;
        }
        ++stats_.forks;
        backoff_ = std::chrono::milliseconds(0);
        backoff_until_ = {};
        if (stopping_ || warm_.size() >= settings_.max_warm) {
            // Not wanted any more (shutdown raced the fork): never keep it.
            lock.unlock();
            vm->destroy();
            vm.reset();
            lock.lock();
            continue;
        }
        warm_.push_back(std::move(vm));
        ready_cv_.notify_all();
    }
}

LeasedVm WarmPool::lease(const std::string& identity) {
    return lease(Clock::now() + settings_.lease_wait, identity);
}

LeasedVm WarmPool::lease(Clock::time_point deadline, const std::string& identity) {
    const auto start = Clock::now();
    const auto limit = std::min(deadline, start + settings_.lease_wait);

    std::unique_lock lock(mutex_);
    if (stopping_) throw unavailable();
    ++active_leases_;
    // Every exit path below holds the lock and calls leave() first, so
    // shutdown() can wait until no lease() still touches the pool.
    const auto leave = [this] {
        if (--active_leases_ == 0 && stopping_) idle_cv_.notify_all();
    };

    for (;;) {
        if (warm_.empty()) {
            ++waiting_;
            refill_cv_.notify_all();  // a waiter may raise the refill target
            const bool ready =
                ready_cv_.wait_until(lock, limit, [this] { return stopping_ || !warm_.empty(); });
            --waiting_;
            if (stopping_) {
                leave();
                throw unavailable();
            }
            if (!ready) {
                ++stats_.lease_timeouts;
                const std::uint32_t retry_after = retry_after_seconds();
                const bool failing = backoff_.count() != 0;
                leave();
                throw ServiceError::capacity_exhausted(
                    failing ? "no warm VM available: forking new VMs is failing"
                            : "no warm VM available within the lease wait",
                    retry_after);
            }
        }

        std::unique_ptr<PooledVm> vm = std::move(warm_.front());
        warm_.pop_front();
        refill_cv_.notify_all();  // a slot opened below the target

        // Health check and resume can block (agent ping, VMM round trip):
        // never under the lock.
        lock.unlock();
        bool ok = false;
        try {
            ok = vm->healthy();
            if (ok) vm->resume(identity);
        } catch (...) {
            ok = false;
        }
        if (!ok) {
            vm->destroy();
            vm.reset();
        }
        lock.lock();

        if (!ok) {
            ++stats_.unhealthy_discarded;
            continue;  // try the next one; the limit still applies
        }
        if (stopping_) {
            leave();
            lock.unlock();
            vm->destroy();
            throw unavailable();
        }
        ++stats_.leases;
        record_lease_latency(Clock::now() - start);
        leased_gauge_->fetch_add(1);
        leave();
        return LeasedVm(std::move(vm), leased_gauge_);
    }
}

PoolStats WarmPool::stats() const {
    const std::lock_guard lock(mutex_);
    PoolStats out = stats_;
    out.warm = warm_.size();
    out.forking = in_flight_;
    out.leased = leased_gauge_->load();
    return out;
}

bool WarmPool::wait_warm(std::size_t n, std::chrono::milliseconds timeout) const {
    std::unique_lock lock(mutex_);
    ready_cv_.wait_for(lock, timeout, [&] { return stopping_ || warm_.size() >= n; });
    return warm_.size() >= n;
}

void WarmPool::shutdown() noexcept {
    const std::lock_guard serial(shutdown_mutex_);
    {
        const std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    refill_cv_.notify_all();
    ready_cv_.notify_all();
    for (std::thread& worker : workers_) {
        if (worker.joinable()) worker.join();
    }
    workers_.clear();

    std::deque<std::unique_ptr<PooledVm>> drained;
    {
        std::unique_lock lock(mutex_);
        idle_cv_.wait(lock, [this] { return active_leases_ == 0; });
        drained.swap(warm_);
    }
    for (std::unique_ptr<PooledVm>& vm : drained) vm->destroy();
}

}  // namespace forkvm::pool
