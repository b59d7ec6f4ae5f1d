// Requests per second per API key: the token bucket, and the 429 it gives.
#include <doctest/doctest.h>

#include "server/rate_limiter.hpp"
#include "tests/unit/server_test_support.hpp"

using namespace forkvm::server;
using namespace forkvm::server::test;
using namespace std::chrono_literals;

TEST_CASE("rate limiter: a burst, then the rate, keys are separate, 0 means no limit") {
    RateLimiter limiter(2, 3);  // 2 per second, 3 saved up
    const auto t0 = RateLimiter::Clock::now();
    for (int i = 0; i < 3; ++i) CHECK_FALSE(limiter.take("a", t0).has_value());
    const auto refused = limiter.take("a", t0);
    REQUIRE(refused.has_value());
    CHECK(*refused == 1U);                                   // half a second away, rounded up
    CHECK_FALSE(limiter.take("b", t0).has_value());          // another key has its own bucket
    CHECK_FALSE(limiter.take("a", t0 + 500ms).has_value());  // one token back after 0.5 s
    CHECK(limiter.take("a", t0 + 500ms).has_value());
    CHECK_FALSE(limiter.take("a", t0 + 10s).has_value());  // refills, but only up to the burst
    CHECK_FALSE(limiter.take("a", t0 + 10s).has_value());
    CHECK_FALSE(limiter.take("a", t0 + 10s).has_value());
    CHECK(limiter.take("a", t0 + 10s).has_value());
    CHECK(limiter.take("a", t0 + 9s).has_value());  // time going backwards gives nothing

    RateLimiter slow(0.1, 1);
    CHECK_FALSE(slow.take("a", t0).has_value());
    CHECK(*slow.take("a", t0) == 10U);

    RateLimiter off(0, 1);
    for (int i = 0; i < 1000; ++i) CHECK_FALSE(off.take("a", t0).has_value());
}

TEST_CASE("server: a key over its request rate gets 429 with Retry-After, others and public routes do not") {
    auto options = test_options();
    options.rate_limit = 0.5;
    options.rate_burst = 3;
    Fixture f(options);
    Client client(f.port());
    for (int i = 0; i < 3; ++i) CHECK(client.request("GET", "/v1/sandboxes/sb-a").status == 200);
    const auto r = client.request("GET", "/v1/sandboxes/sb-a");
    CHECK(r.status == 429);
    CHECK(r.json()["error"]["code"] == "rate_limited");
    CHECK(r.header("retry-after") == "2");
    CHECK(f.service.call_count("get") == 3U);  // the refused request never reached the service
    CHECK(client.request("GET", "/v1/sandboxes/sb-b", "", {}, key_b).status == 200);
    CHECK(client.request("GET", "/healthz", "", {}, "").status == 200);
    // A refused request with a body closes the connection (the body is not read).
    const auto with_body = f.call("POST", "/v1/sandboxes", "{}");
    CHECK(with_body.status == 429);
}
