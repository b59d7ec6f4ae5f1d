// WarmPool logic against a fake VmSource: warm-up, refill, waiting, failures,
// health, caps on warm VMs and concurrent forks, and leak-free shutdown.
// Waits are on condition variables with generous timeouts, never on wall-clock
// assertions; the only sleeps are a few ms to give a wrong extra fork a chance.

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <doctest/doctest.h>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "pool/random_id.hpp"
#include "pool/service_error.hpp"
#include "pool/warm_pool.hpp"
#include "tests/support/service_errors.hpp"

using forkvm::pool::ErrorCode;
using forkvm::pool::LeasedVm;
using forkvm::pool::PooledVm;
using forkvm::pool::PoolSettings;
using forkvm::pool::ServiceError;
using forkvm::pool::VmSource;
using forkvm::pool::WarmPool;
using forkvm::test::code_of;
using namespace std::chrono_literals;

namespace {

constexpr auto kLong = 10s;  // only reached if the code under test is broken

// Everything the fake observed. Outlives the pool and every VM.
struct FakeLog {
    std::mutex mutex;
    std::condition_variable cv;
    // knobs
    bool fail = false;           // fork_paused throws
    int unhealthy_next = 0;      // the next N forks report unhealthy
    bool health_throws = false;  // healthy() throws instead of answering
    bool resume_throws = false;  // resume() throws
    bool gate_open = true;       // fork_paused blocks while false
    // observations
    int fork_calls = 0;
    int in_fork = 0;
    int max_in_fork = 0;
    std::vector<std::string> made;
    std::set<std::string> paused_alive;  // made, not yet popped for a lease, not destroyed
    std::function<void()> on_fork;       // called at the start of every fork, unlocked
    std::map<std::string, int> destroys;
    std::set<std::string> resumed;
    std::map<std::string, std::string> identities;  // vm id -> identity given at resume

    template <class Pred>
    bool wait(Pred pred) {
        std::unique_lock lock(mutex);
        return cv.wait_for(lock, kLong, pred);
    }
    void set(const std::function<void(FakeLog&)>& change) {
        {
            const std::lock_guard lock(mutex);
            change(*this);
        }
        cv.notify_all();
    }
    int destroyed(const std::string& id) {
        const std::lock_guard lock(mutex);
        const auto it = destroys.find(id);
        return it == destroys.end() ? 0 : it->second;
    }
};

class FakeVm final : public PooledVm {
public:
    FakeVm(FakeLog& log, std::string id, bool healthy) : log_(log), id_(std::move(id)), healthy_(healthy) {}
    std::string id() const override { return id_; }
    void resume(const std::string& identity) override {
        const std::lock_guard lock(log_.mutex);
        if (log_.resume_throws) throw std::runtime_error("resume failed");
        log_.resumed.insert(id_);
        log_.identities[id_] = identity;
        log_.paused_alive.erase(id_);
    }
    bool healthy() override {
        const std::lock_guard lock(log_.mutex);
        log_.paused_alive.erase(id_);  // the pool checks health only after popping it
        if (log_.health_throws) throw std::runtime_error("agent gone");
        return healthy_;
    }
    void destroy() noexcept override {
        {
            const std::lock_guard lock(log_.mutex);
            ++log_.destroys[id_];
            log_.paused_alive.erase(id_);
        }
        log_.cv.notify_all();
    }
    // The pool never talks to the agent or forks a leased VM; these exist only
    // to satisfy the interface and fail loudly if the pool starts using them.
    forkvm::vmm::AgentClient& agent() override { throw std::logic_error("FakeVm has no agent"); }
    std::unique_ptr<PooledVm> fork(const std::string&) override {
        throw std::logic_error("FakeVm cannot fork");
    }
    void snapshot(const std::string&) override { throw std::logic_error("FakeVm cannot snapshot"); }
    std::string console_tail() noexcept override { return {}; }

private:
    FakeLog& log_;
    std::string id_;
    bool healthy_;
};

class FakeSource final : public VmSource {
public:
    explicit FakeSource(FakeLog& log) : log_(log) {}
    std::unique_ptr<PooledVm> fork_paused(const std::string& id) override {
        if (log_.on_fork) log_.on_fork();  // set before the pool starts, never changed
        std::unique_lock lock(log_.mutex);
        ++log_.fork_calls;
        ++log_.in_fork;
        log_.max_in_fork = std::max(log_.max_in_fork, log_.in_fork);
        log_.cv.notify_all();
        log_.cv.wait(lock, [&] { return log_.gate_open; });
        --log_.in_fork;
        if (log_.fail) {
            log_.cv.notify_all();
            throw std::runtime_error("fork failed");
        }
        const bool healthy = log_.unhealthy_next <= 0;
        if (!healthy) --log_.unhealthy_next;
        log_.made.push_back(id);
        log_.paused_alive.insert(id);
        log_.cv.notify_all();
        return std::make_unique<FakeVm>(log_, id, healthy);
    }

private:
    FakeLog& log_;
};

WarmPool::IdGenerator counting_ids() {
    auto next = std::make_shared<std::atomic<int>>(0);
    return [next] { return "vm-" + std::to_string(next->fetch_add(1)); };
}

PoolSettings settings(std::size_t min_warm, std::size_t max_warm, std::size_t concurrency = 1) {
    PoolSettings s;
    s.min_warm = min_warm;
    s.max_warm = max_warm;
    s.refill_concurrency = concurrency;
    s.lease_wait = kLong;
    s.backoff_initial = 1ms;
    s.backoff_max = 4ms;
    return s;
}

}  // namespace

TEST_CASE("pool: warm-up forks exactly min_warm paused VMs") {
    FakeLog log;
    FakeSource source(log);
    WarmPool pool(source, settings(2, 4), counting_ids());
    REQUIRE(pool.wait_warm(2, kLong));
    std::this_thread::sleep_for(3ms);  // room for a wrong extra fork
    const auto st = pool.stats();
    CHECK(st.warm == 2);
    CHECK(st.forks == 2);
    CHECK(st.fork_failures == 0);
    CHECK(st.leased == 0);
    const std::lock_guard lock(log.mutex);
    CHECK(log.fork_calls == 2);
    CHECK(log.resumed.empty());  // warm VMs stay paused
}

TEST_CASE("pool: lease pops a warm VM, resumes it and triggers a refill") {
    FakeLog log;
    FakeSource source(log);
    WarmPool pool(source, settings(2, 2), counting_ids());
    REQUIRE(pool.wait_warm(2, kLong));

    LeasedVm vm = pool.lease("sb-first");
    REQUIRE(vm);
    const std::string id = vm->id();
    CHECK(id == "vm-0");  // FIFO: the oldest warm VM goes first
    {
        const std::lock_guard lock(log.mutex);
        CHECK(log.resumed.count(id) == 1);
        CHECK(log.identities[id] == "sb-first");  // the hostname it resumes with
    }
    REQUIRE(pool.wait_warm(2, kLong));  // refilled back to min_warm
    auto st = pool.stats();
    CHECK(st.forks == 3);
    CHECK(st.leases == 1);
    CHECK(st.leased == 1);
    std::uint64_t samples = 0;
    for (auto n : st.lease_latency_buckets) samples += n;
    CHECK(samples == 1);

    vm.release();
    CHECK(!vm);
    CHECK(log.destroyed(id) == 1);
    vm.release();  // idempotent
    CHECK(log.destroyed(id) == 1);
    CHECK(pool.stats().leased == 0);
}

TEST_CASE("pool: a lease on an empty pool waits for the refill it asked for") {
    FakeLog log;
    log.gate_open = false;
    FakeSource source(log);
    WarmPool pool(source, settings(0, 1), counting_ids());  // min_warm 0: forks only on demand
    CHECK(pool.stats().forks == 0);

    auto pending = std::async(std::launch::async, [&] { return pool.lease(); });
    REQUIRE(log.wait([&] { return log.in_fork == 1; }));  // the waiting lease started a fork
    CHECK(pending.wait_for(0ms) == std::future_status::timeout);
    log.set([](FakeLog& l) { l.gate_open = true; });

    LeasedVm vm = pending.get();
    REQUIRE(vm);
    CHECK(vm->id() == "vm-0");
    CHECK(pool.stats().leases == 1);
    CHECK(pool.stats().warm == 0);  // min_warm 0: nothing more is kept
}

TEST_CASE("pool: lease times out with capacity_exhausted while forks fail, then recovers") {
    FakeLog log;
    log.fail = true;
    FakeSource source(log);
    PoolSettings s = settings(1, 1);
    s.lease_wait = 20ms;
    WarmPool pool(source, s, counting_ids());

    try {
        (void)pool.lease();
        FAIL("lease must not succeed while every fork fails");
    } catch (const ServiceError& e) {
        CHECK(e.code() == ErrorCode::capacity_exhausted);
        REQUIRE(e.retry_after_seconds());
        CHECK(*e.retry_after_seconds() >= 1U);
    }
    REQUIRE(log.wait([&] { return log.fork_calls >= 3; }));  // failures are retried, not fatal
    auto st = pool.stats();
    CHECK(st.fork_failures >= 2);
    CHECK(st.lease_timeouts == 1);
    CHECK(st.leases == 0);

    log.set([](FakeLog& l) { l.fail = false; });
    REQUIRE(pool.wait_warm(1, kLong));
    LeasedVm vm = pool.lease();
    CHECK(vm);
}

TEST_CASE("pool: a lease past its own deadline gives up at once") {
    FakeLog log;
    log.gate_open = false;
    FakeSource source(log);
    WarmPool pool(source, settings(0, 1), counting_ids());
    CHECK(code_of([&] { (void)pool.lease(std::chrono::steady_clock::now()); }) ==
          ErrorCode::capacity_exhausted);
    log.set([](FakeLog& l) { l.gate_open = true; });
}

TEST_CASE("pool: unhealthy VMs are destroyed and never leased") {
    FakeLog log;
    FakeSource source(log);
    SUBCASE("healthy() says no") { log.unhealthy_next = 2; }
    SUBCASE("healthy() throws") { log.health_throws = true; }
    SUBCASE("resume() throws") { log.resume_throws = true; }
    const bool all_bad = log.health_throws || log.resume_throws;

    WarmPool pool(source, settings(3, 3), counting_ids());
    REQUIRE(pool.wait_warm(3, kLong));
    if (all_bad) {
        // Every VM fails its check: the lease drains and refills until its
        // deadline, then reports capacity_exhausted; nothing is handed out.
        CHECK(code_of([&] { (void)pool.lease(std::chrono::steady_clock::now() + 20ms); }) ==
              ErrorCode::capacity_exhausted);
        CHECK(pool.stats().leases == 0);
        CHECK(pool.stats().unhealthy_discarded >= 3);
        const std::lock_guard lock(log.mutex);
        CHECK(log.resumed.empty());
        std::size_t destroyed = 0;
        for (const std::string& id : log.made) {
            CHECK(log.destroys[id] <= 1);
            destroyed += static_cast<std::size_t>(log.destroys[id]);
        }
        CHECK(destroyed + log.paused_alive.size() == log.made.size());
    } else {
        LeasedVm vm = pool.lease();
        REQUIRE(vm);
        CHECK(vm->id() == "vm-2");
        CHECK(log.destroyed("vm-0") == 1);
        CHECK(log.destroyed("vm-1") == 1);
        CHECK(pool.stats().unhealthy_discarded == 2);
        const std::lock_guard lock(log.mutex);
        CHECK(log.resumed == std::set<std::string>{"vm-2"});
    }
}

TEST_CASE("pool: waiting leases never push the pool past max_warm or refill_concurrency") {
    FakeLog log;
    log.gate_open = false;
    FakeSource source(log);
    std::atomic<WarmPool*> pool_seen{nullptr};
    std::atomic<std::size_t> peak_held{0};
    log.on_fork = [&] {
        // Seen from inside a fork, the pool already counts this fork as in flight.
        if (WarmPool* p = pool_seen.load()) {
            const auto st = p->stats();
            std::size_t held = st.warm + st.forking;
            std::size_t prev = peak_held.load();
            while (held > prev && !peak_held.compare_exchange_weak(prev, held)) {
            }
        }
    };
    WarmPool pool(source, settings(0, 2, 4), counting_ids());
    pool_seen = &pool;

    std::vector<std::future<LeasedVm>> leases;
    for (int i = 0; i < 4; ++i)
        leases.push_back(std::async(std::launch::async, [&] { return pool.lease(); }));
    REQUIRE(log.wait([&] { return log.in_fork == 2; }));
    std::this_thread::sleep_for(3ms);  // room for a wrong third fork
    {
        const std::lock_guard lock(log.mutex);
        CHECK(log.fork_calls == 2);
    }
    log.set([](FakeLog& l) { l.gate_open = true; });
    std::set<std::string> ids;
    for (auto& f : leases) {
        LeasedVm vm = f.get();
        REQUIRE(vm);
        ids.insert(vm->id());
    }
    CHECK(ids.size() == 4);
    const std::lock_guard lock(log.mutex);
    CHECK(peak_held.load() >= 1);
    CHECK(peak_held.load() <= 2);
    CHECK(log.max_in_fork <= 2);
}

TEST_CASE("pool: at most refill_concurrency forks run at once") {
    FakeLog log;
    log.gate_open = false;
    FakeSource source(log);
    WarmPool pool(source, settings(4, 4, 2), counting_ids());
    REQUIRE(log.wait([&] { return log.in_fork == 2; }));
    std::this_thread::sleep_for(3ms);
    {
        const std::lock_guard lock(log.mutex);
        CHECK(log.in_fork == 2);
    }
    log.set([](FakeLog& l) { l.gate_open = true; });
    REQUIRE(pool.wait_warm(4, kLong));
    const std::lock_guard lock(log.mutex);
    CHECK(log.max_in_fork == 2);
    CHECK(log.fork_calls == 4);
}

TEST_CASE("pool: shutdown destroys every warm VM exactly once and leaves leases to their holders") {
    FakeLog log;
    FakeSource source(log);
    auto pool = std::make_unique<WarmPool>(source, settings(3, 3), counting_ids());
    REQUIRE(pool->wait_warm(3, kLong));
    LeasedVm leased = pool->lease();
    REQUIRE(pool->wait_warm(3, kLong));

    pool->shutdown();
    pool->shutdown();  // idempotent
    CHECK(code_of([&] { (void)pool->lease(); }) == ErrorCode::unavailable);
    pool.reset();  // the destructor's shutdown is a no-op now

    {
        const std::lock_guard lock(log.mutex);
        CHECK(log.made.size() == 4);
        for (const std::string& id : log.made) {
            CHECK(log.destroys[id] == (id == leased->id() ? 0 : 1));
        }
    }
    leased.release();  // outlives the pool safely
    const std::lock_guard lock(log.mutex);
    for (const std::string& id : log.made) CHECK(log.destroys[id] == 1);  // no leak, no double destroy
}

TEST_CASE("pool: shutdown wakes a waiting lease and destroys a VM whose fork was in flight") {
    FakeLog log;
    log.gate_open = false;
    FakeSource source(log);
    WarmPool pool(source, settings(0, 1), counting_ids());

    auto pending = std::async(std::launch::async, [&] { return code_of([&] { (void)pool.lease(); }); });
    REQUIRE(log.wait([&] { return log.in_fork == 1; }));
    auto stopping = std::async(std::launch::async, [&] { pool.shutdown(); });
    CHECK(pending.get() == ErrorCode::unavailable);
    log.set([](FakeLog& l) { l.gate_open = true; });  // let the in-flight fork finish
    stopping.get();
    const std::lock_guard lock(log.mutex);
    REQUIRE(log.made.size() == 1);
    CHECK(log.destroys[log.made[0]] == 1);
    CHECK(log.resumed.empty());
}

TEST_CASE("pool: moving a LeasedVm transfers ownership, and assigning over one destroys the old VM") {
    FakeLog log;
    FakeSource source(log);
    WarmPool pool(source, settings(2, 2), counting_ids());
    LeasedVm a = pool.lease();
    LeasedVm b = pool.lease();
    const std::string id_a = a->id();
    const std::string id_b = b->id();
    LeasedVm c(std::move(a));
    CHECK(!a);  // NOLINT(bugprone-use-after-move): checking the moved-from state is the point
    CHECK(c->id() == id_a);
    c = std::move(b);
    CHECK(log.destroyed(id_a) == 1);
    CHECK(log.destroyed(id_b) == 0);
    CHECK(pool.stats().leased == 1);
}

TEST_CASE("pool: invalid pool settings are rejected with the field at fault") {
    FakeLog log;
    FakeSource source(log);
    const auto field_of = [&](PoolSettings s) -> std::string {
        try {
            WarmPool pool(source, s);
        } catch (const ServiceError& e) {
            CHECK(e.code() == ErrorCode::invalid_argument);
            return e.field().value_or("");
        }
        return "";
    };
    CHECK(field_of(settings(3, 2)) == "pool.min_warm");
    CHECK(field_of(settings(0, 0)) == "pool.max_warm");
    CHECK(field_of(settings(1, 2, 0)) == "pool.refill_concurrency");
    PoolSettings s = settings(1, 2);
    s.backoff_max = 0ms;
    CHECK(field_of(s) == "pool.backoff_max");
    CHECK(log.fork_calls == 0);
}

TEST_CASE("pool: random ids carry the prefix and 64 random bits in hex") {
    const std::string a = forkvm::pool::random_id("sb-");
    const std::string b = forkvm::pool::random_id("sb-");
    CHECK(a.size() == 19);
    CHECK(a.rfind("sb-", 0) == 0);
    for (char ch : a.substr(3)) CHECK(((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')));
    CHECK(a != b);
}
