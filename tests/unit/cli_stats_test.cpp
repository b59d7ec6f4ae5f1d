// cli/stats.hpp: the percentiles forkvm bench reports.

#include <cmath>
#include <doctest/doctest.h>
#include <limits>
#include <vector>

#include "cli/stats.hpp"

using forkvm::cli::percentile;
using forkvm::cli::summarize;

TEST_CASE("cli: percentile of no samples is absent") {
    const std::vector<double> none;
    CHECK_FALSE(percentile(none, 50).has_value());
    CHECK_FALSE(summarize(none).has_value());
}

TEST_CASE("cli: percentile rejects p outside 0..100 and NaN") {
    const std::vector<double> v{1, 2, 3};
    CHECK_FALSE(percentile(v, -0.5).has_value());
    CHECK_FALSE(percentile(v, 100.5).has_value());
    CHECK_FALSE(percentile(v, std::numeric_limits<double>::quiet_NaN()).has_value());
}

TEST_CASE("cli: nearest-rank percentiles of 1..10 in any order") {
    const std::vector<double> v{7, 3, 10, 1, 9, 2, 8, 4, 6, 5};
    CHECK(*percentile(v, 0) == 1);
    CHECK(*percentile(v, 10) == 1);
    CHECK(*percentile(v, 11) == 2);
    CHECK(*percentile(v, 50) == 5);
    CHECK(*percentile(v, 90) == 9);  // exactly 90 % of the samples are <= 9
    CHECK(*percentile(v, 91) == 10);
    CHECK(*percentile(v, 99) == 10);
    CHECK(*percentile(v, 100) == 10);
}

TEST_CASE("cli: p99 of 1000 samples is the 990th, not the maximum") {
    std::vector<double> v;
    for (int i = 1000; i >= 1; --i) v.push_back(i);
    CHECK(*percentile(v, 99) == 990);
    CHECK(*percentile(v, 50) == 500);
    CHECK(*percentile(v, 99.9) == 999);
}

TEST_CASE("cli: percentiles of one sample and of five are measured values") {
    const std::vector<double> one{42.5};
    CHECK(*percentile(one, 0) == 42.5);
    CHECK(*percentile(one, 99) == 42.5);
    const std::vector<double> five{50, 10, 40, 20, 30};
    CHECK(*percentile(five, 50) == 30);
    CHECK(*percentile(five, 90) == 50);
    CHECK(*percentile(five, 20) == 10);
    CHECK(*percentile(five, 21) == 20);
}

TEST_CASE("cli: summary has count, min, mean, percentiles and max") {
    const std::vector<double> v{4, 1, 3, 2};
    auto s = summarize(v);
    REQUIRE(s.has_value());
    CHECK(s->count == 4);
    CHECK(s->min == 1);
    CHECK(s->max == 4);
    CHECK(s->mean == doctest::Approx(2.5));
    CHECK(s->p50 == 2);
    CHECK(s->p90 == 4);
    CHECK(s->p99 == 4);
}

TEST_CASE("cli: stopwatch measures elapsed wall time") {
    forkvm::cli::Stopwatch w;
    const double a = w.elapsed_ms();
    CHECK(a >= 0);
    CHECK(w.elapsed_ms() >= a);
    w.restart();
    CHECK(w.elapsed_ms() < 60'000);
}
