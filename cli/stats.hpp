#pragma once
// Latency statistics for the forkvm benchmarks: nearest-rank percentiles and
// a summary of a sample set, plus a stopwatch. Header-only because cli/ is
// built into the forkvm executable only, and the unit tests include it too.

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <optional>
#include <span>
#include <vector>

namespace forkvm::cli {

// The nearest-rank percentile: the smallest sample such that at least p
// percent of all samples are <= it (p = 0 gives the minimum). Every value it
// returns was measured, which is what a reader of "p99 = 41 ms" expects.
// nullopt for no samples or p outside [0, 100] (or NaN).
[[nodiscard]] inline std::optional<double> percentile(std::span<const double> samples, double p) {
    if (samples.empty() || !(p >= 0.0 && p <= 100.0)) return std::nullopt;
    std::vector<double> sorted(samples.begin(), samples.end());
    std::sort(sorted.begin(), sorted.end());
    // p * n first, so that whole-number ranks (90 % of 10) stay exact.
    const double rank = std::ceil(p * static_cast<double>(sorted.size()) / 100.0);
    const auto index = rank < 1.0 ? std::size_t{0} : static_cast<std::size_t>(rank) - 1;
    return sorted[std::min(index, sorted.size() - 1)];
}

struct Summary {
    std::size_t count = 0;
    double min = 0;
    double mean = 0;
    double p50 = 0;
    double p90 = 0;
    double p99 = 0;
    double max = 0;
};

// nullopt for no samples.
[[nodiscard]] inline std::optional<Summary> summarize(std::span<const double> samples) {
    if (samples.empty()) return std::nullopt;
    Summary s;
    s.count = samples.size();
    const auto [lo, hi] = std::minmax_element(samples.begin(), samples.end());
    s.min = *lo;
    s.max = *hi;
    double sum = 0;
    for (double v : samples) sum += v;
    s.mean = sum / static_cast<double>(s.count);
    s.p50 = *percentile(samples, 50);
    s.p90 = *percentile(samples, 90);
    s.p99 = *percentile(samples, 99);
    return s;
}

// Wall time since construction (or restart()), in milliseconds.
class Stopwatch {
public:
    using Clock = std::chrono::steady_clock;

    void restart() { start_ = Clock::now(); }
    [[nodiscard]] double elapsed_ms() const {
        return std::chrono::duration<double, std::milli>(Clock::now() - start_).count();
    }

private:
    Clock::time_point start_ = Clock::now();
};

}  // namespace forkvm::cli
