// SandboxRegistry: TTLs, keep-alive, expired vs not_found, owner isolation,
// caps and input limits, driven by a manual clock (no sleeps).

#include <chrono>
#include <doctest/doctest.h>
#include <functional>
#include <string>

#include "pool/sandbox_registry.hpp"
#include "pool/service_error.hpp"

using forkvm::pool::ErrorCode;
using forkvm::pool::Labels;
using forkvm::pool::RegistrySettings;
using forkvm::pool::SandboxRegistry;
using forkvm::pool::SandboxState;
using forkvm::pool::ServiceError;
using forkvm::pool::TimePoint;
using namespace std::chrono_literals;

namespace {

struct ManualClock {
    TimePoint now = TimePoint{} + std::chrono::hours(24 * 365 * 50);
    SandboxRegistry::Clock fn() {
        return [this] { return now; };
    }
};

RegistrySettings small_settings() {
    RegistrySettings s;
    s.max_sandboxes = 3;
    s.max_per_key = 2;
    s.default_ttl = 5min;
    s.max_ttl = 60min;
    return s;
}

ServiceError error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const ServiceError& e) {
        return e;
    }
    FAIL("expected a ServiceError");
    return ServiceError::internal("unreachable");
}

}  // namespace

TEST_CASE("pool: a new sandbox starts with the default TTL and is visible to its owner only") {
    ManualClock clock;
    SandboxRegistry reg(small_settings(), clock.fn());
    const auto info = reg.create("sb-1", "key-a", std::nullopt, Labels{{"team", "x"}});
    CHECK(info.state == SandboxState::starting);
    CHECK(info.created == clock.now);
    CHECK(info.expires == clock.now + 5min);
    CHECK(info.labels.at("team") == "x");

    reg.mark_running("sb-1");
    CHECK(reg.get("sb-1", "key-a").state == SandboxState::running);
    CHECK(error_of([&] { reg.get("sb-1", "key-b"); }).code() == ErrorCode::not_found);
    CHECK(error_of([&] { reg.get("sb-nope", "key-a"); }).code() == ErrorCode::not_found);
    CHECK(error_of([&] { reg.remove("sb-1", "key-b"); }).code() == ErrorCode::not_found);
    CHECK(error_of([&] { reg.keep_alive("sb-1", "key-b"); }).code() == ErrorCode::not_found);
    CHECK(reg.list("key-b").empty());
    CHECK(reg.live_count() == 1);  // the other owner's attempts changed nothing
    CHECK(to_string(SandboxState::running) == "running");
}

TEST_CASE("pool: TTLs that are not positive or exceed max_ttl are rejected") {
    ManualClock clock;
    SandboxRegistry reg(small_settings(), clock.fn());
    auto e = error_of([&] { reg.create("sb-1", "k", 61min); });
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK(e.field() == "ttl");
    CHECK(error_of([&] { reg.create("sb-1", "k", 0ms); }).field() == "ttl");
    CHECK(error_of([&] { reg.create("sb-1", "k", -5ms); }).field() == "ttl");
    CHECK(reg.create("sb-1", "k", 60min).expires == clock.now + 60min);
    CHECK(error_of([&] { reg.keep_alive("sb-1", "k", 2h); }).field() == "ttl");
}

TEST_CASE("pool: keep-alive extends the expiry and never shortens it") {
    ManualClock clock;
    SandboxRegistry reg(small_settings(), clock.fn());
    reg.create("sb-1", "k", std::nullopt);
    clock.now += 4min;
    CHECK(reg.keep_alive("sb-1", "k").expires == clock.now + 5min);
    clock.now += 4min;  // 8 min after creation: alive only thanks to keep-alive
    CHECK(reg.expire_due(clock.now).empty());
    CHECK(reg.get("sb-1", "k").expires == clock.now + 1min);
    CHECK(reg.keep_alive("sb-1", "k", 30s).expires == clock.now + 1min);  // not shortened
    CHECK(reg.keep_alive("sb-1", "k", 20min).expires == clock.now + 20min);
}

TEST_CASE("pool: an expired sandbox answers expired to its owner and not_found to others") {
    ManualClock clock;
    SandboxRegistry reg(small_settings(), clock.fn());
    reg.create("sb-1", "k", 1min);
    reg.create("sb-2", "k", 10min);
    clock.now += 1min;

    // Due but not swept yet: already reported as expired.
    CHECK(error_of([&] { reg.get("sb-1", "k"); }).code() == ErrorCode::expired);
    CHECK(error_of([&] { reg.keep_alive("sb-1", "k"); }).code() == ErrorCode::expired);
    CHECK(reg.list("k").size() == 1);

    const auto due = reg.expire_due(clock.now);
    REQUIRE(due.size() == 1);
    CHECK(due[0].id == "sb-1");
    CHECK(due[0].state == SandboxState::expired);
    CHECK(reg.expire_due(clock.now).empty());  // handed out once

    CHECK(error_of([&] { reg.get("sb-1", "k"); }).code() == ErrorCode::expired);
    CHECK(error_of([&] { reg.remove("sb-1", "k"); }).code() == ErrorCode::expired);
    CHECK(error_of([&] { reg.get("sb-1", "other"); }).code() == ErrorCode::not_found);
    CHECK(reg.live_count() == 1);
    CHECK(reg.live_count("k") == 1);
    CHECK(reg.get("sb-2", "k").state == SandboxState::starting);
    CHECK(error_of([&] { reg.create("sb-1", "k", std::nullopt); }).code() == ErrorCode::conflict);
}

TEST_CASE("pool: expired tombstones are bounded by count and age") {
    ManualClock clock;
    RegistrySettings s = small_settings();
    s.max_sandboxes = 10;
    s.max_per_key = 10;
    s.max_tombstones = 2;
    s.tombstone_ttl = 1h;
    SandboxRegistry reg(s, clock.fn());
    reg.create("sb-1", "k", 1min);
    reg.create("sb-2", "k", 2min);
    reg.create("sb-3", "k", 3min);
    clock.now += 3min;
    CHECK(reg.expire_due(clock.now).size() == 3);
    CHECK(error_of([&] { reg.get("sb-1", "k"); }).code() == ErrorCode::not_found);  // over the count cap
    CHECK(error_of([&] { reg.get("sb-3", "k"); }).code() == ErrorCode::expired);
    clock.now += 2h;
    reg.expire_due(clock.now);
    CHECK(error_of([&] { reg.get("sb-3", "k"); }).code() == ErrorCode::not_found);  // too old
}

TEST_CASE("pool: a deleted sandbox is gone and frees its slot") {
    ManualClock clock;
    SandboxRegistry reg(small_settings(), clock.fn());
    reg.create("sb-1", "k", std::nullopt);
    const auto removed = reg.remove("sb-1", "k");
    CHECK(removed.state == SandboxState::deleted);
    CHECK(removed.id == "sb-1");
    CHECK(error_of([&] { reg.get("sb-1", "k"); }).code() == ErrorCode::not_found);
    CHECK(error_of([&] { reg.remove("sb-1", "k"); }).code() == ErrorCode::not_found);
    CHECK(reg.live_count() == 0);
    CHECK(reg.live_count("k") == 0);
    reg.create("sb-1", "k", std::nullopt);  // the id may be reused after a delete
    reg.erase("sb-1");                      // rollback path
    reg.erase("sb-1");                      // no-op
    CHECK(reg.live_count("k") == 0);
}

TEST_CASE("pool: per-key and global caps give rate_limited and capacity_exhausted with a retry hint") {
    ManualClock clock;
    SandboxRegistry reg(small_settings(), clock.fn());  // 3 total, 2 per key
    reg.create("a-1", "a", 2min);
    reg.create("a-2", "a", std::nullopt);
    auto limited = error_of([&] { reg.create("a-3", "a", std::nullopt); });
    CHECK(limited.code() == ErrorCode::rate_limited);
    CHECK(limited.retry_after_seconds() == 120U);  // a-1 expires first
    reg.create("b-1", "b", std::nullopt);
    auto full = error_of([&] { reg.create("c-1", "c", std::nullopt); });
    CHECK(full.code() == ErrorCode::capacity_exhausted);
    REQUIRE(full.retry_after_seconds());
    CHECK(*full.retry_after_seconds() >= 1U);
    CHECK(reg.live_count() == 3);

    reg.remove("a-1", "a");
    reg.create("c-1", "c", std::nullopt);
    CHECK(error_of([&] { reg.create("a-3", "a", std::nullopt); }).code() == ErrorCode::capacity_exhausted);
    CHECK(error_of([&] { reg.create("b-1", "b", std::nullopt); }).code() == ErrorCode::conflict);
}

TEST_CASE("pool: a broken sandbox keeps its reason, counts against caps and refuses keep-alive") {
    ManualClock clock;
    SandboxRegistry reg(small_settings(), clock.fn());
    reg.create("sb-1", "k", std::nullopt);
    reg.mark_running("sb-1");
    reg.mark_broken("sb-1", "vmm exited with signal 9");
    const auto info = reg.get("sb-1", "k");
    CHECK(info.state == SandboxState::broken);
    CHECK(info.broken_reason == "vmm exited with signal 9");
    CHECK(error_of([&] { reg.keep_alive("sb-1", "k"); }).code() == ErrorCode::vm_broken);
    reg.mark_running("sb-1");  // does not resurrect a broken sandbox
    CHECK(reg.get("sb-1", "k").state == SandboxState::broken);
    CHECK(reg.live_count("k") == 1);
    CHECK(error_of([&] { reg.mark_running("sb-x"); }).code() == ErrorCode::not_found);
    CHECK(error_of([&] { reg.mark_broken("sb-x", "r"); }).code() == ErrorCode::not_found);
}

TEST_CASE("pool: list returns the owner's live sandboxes oldest first") {
    ManualClock clock;
    RegistrySettings s = small_settings();
    s.max_per_key = 3;
    SandboxRegistry reg(s, clock.fn());
    reg.create("z", "k", std::nullopt);
    clock.now += 1s;
    reg.create("a", "k", std::nullopt);
    reg.create("m", "other", std::nullopt);
    const auto mine = reg.list("k");
    REQUIRE(mine.size() == 2);
    CHECK(mine[0].id == "z");
    CHECK(mine[1].id == "a");
}

TEST_CASE("pool: ids and labels from clients are bounded") {
    ManualClock clock;
    SandboxRegistry reg(small_settings(), clock.fn());
    CHECK(error_of([&] { reg.create("", "k", std::nullopt); }).field() == "id");
    CHECK(error_of([&] { reg.create(std::string(129, 'x'), "k", std::nullopt); }).field() == "id");
    Labels many;
    for (int i = 0; i < 33; ++i) many["k" + std::to_string(i)] = "v";
    CHECK(error_of([&] { reg.create("sb", "k", std::nullopt, many); }).field() == "labels");
    CHECK(error_of([&] { reg.create("sb", "k", std::nullopt, Labels{{"", "v"}}); }).field() == "labels");
    CHECK(error_of([&] {
              reg.create("sb", "k", std::nullopt, Labels{{std::string(65, 'k'), "v"}});
          }).field() == "labels");
    CHECK(error_of([&] {
              reg.create("sb", "k", std::nullopt, Labels{{"k", std::string(257, 'v')}});
          }).field() == "labels");
    CHECK(reg.live_count() == 0);
}

TEST_CASE("pool: invalid registry settings are rejected") {
    RegistrySettings s = small_settings();
    s.max_ttl = 1min;  // below default_ttl
    CHECK(error_of([&] { SandboxRegistry reg(s); }).field() == "sandbox.max_ttl");
    s = small_settings();
    s.max_per_key = 0;
    CHECK(error_of([&] { SandboxRegistry reg(s); }).field() == "sandbox.max_per_key");
}
