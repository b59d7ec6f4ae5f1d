// EgressBudget and ConnectionDeadline (http_proxy/egress_budget.hpp): a
// sandbox's connection and byte limits, and one connection's idle and total
// time, with the time passed in.

#include <doctest/doctest.h>
#include <optional>
#include <vector>

#include "http_proxy/egress_budget.hpp"

using forkvm::http_proxy::ConnectionDeadline;
using forkvm::http_proxy::EgressBudget;
using forkvm::http_proxy::Limits;
using namespace std::chrono_literals;

TEST_CASE("egress budget: connections past max_connections are refused until one closes") {
    Limits limits;
    limits.max_connections = 3;
    EgressBudget budget(limits);
    std::vector<EgressBudget::Slot> open;
    for (int i = 0; i < 3; ++i) {
        auto slot = budget.open();
        REQUIRE(slot.has_value());
        open.push_back(std::move(*slot));
    }
    CHECK(budget.open_connections() == 3);
    CHECK_FALSE(budget.open().has_value());
    CHECK(budget.connections_refusal().find("3 proxied connections") != std::string::npos);
    open.pop_back();
    CHECK(budget.open_connections() == 2);
    CHECK(budget.open().has_value());  // and gone again at once: a temporary
    CHECK(budget.open_connections() == 2);
    open.clear();
    CHECK(budget.open_connections() == 0);
}

TEST_CASE("egress budget: bytes count both ways up to max_bytes, then stay spent") {
    Limits limits;
    limits.max_bytes = 1000;
    EgressBudget budget(limits);
    CHECK(budget.spend(600));
    CHECK(budget.spend(400));  // exactly the limit is allowed
    CHECK(budget.bytes_moved() == 1000);
    CHECK_FALSE(budget.spend(1));
    CHECK_FALSE(budget.spend(0));  // spent for good
    EgressBudget huge(limits);
    CHECK_FALSE(huge.spend(~std::uint64_t{0}));  // no wrap-around
    CHECK(huge.bytes_moved() == 1001);
    CHECK(budget.bytes_refusal().find("1000 bytes") != std::string::npos);
}

TEST_CASE("connection deadline: idle time moves with activity, total time does not") {
    Limits limits;
    limits.idle_timeout_ms = 100;
    limits.total_timeout_ms = 250;
    const ConnectionDeadline::Clock::time_point t0{};
    ConnectionDeadline d(limits, t0);
    CHECK(d.deadline() == t0 + 100ms);
    CHECK_FALSE(d.expired(t0 + 99ms).has_value());
    d.activity(t0 + 90ms);
    CHECK(d.deadline() == t0 + 190ms);
    CHECK_FALSE(d.expired(t0 + 150ms).has_value());
    d.activity(t0 + 180ms);
    CHECK(d.deadline() == t0 + 250ms);  // the total comes first now
    const auto total = d.expired(t0 + 250ms);
    REQUIRE(total.has_value());
    CHECK(total->find("total time (250 ms)") != std::string::npos);
    ConnectionDeadline quiet(limits, t0);
    const auto idle = quiet.expired(t0 + 100ms);
    REQUIRE(idle.has_value());
    CHECK(idle->find("idle for 100 ms") != std::string::npos);
}
