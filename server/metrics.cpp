#include "server/metrics.hpp"

#include <fmt/format.h>

namespace forkvm::server {

namespace {

// Label values come from a fixed set, but escape anyway (\, ", newline).
std::string escape_label(std::string_view value) {
    std::string out;
    for (const char c : value) {
        if (c == '\\' || c == '"') out.push_back('\\');
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out.push_back(c);
    }
    return out;
}

void counter(std::string& out, std::string_view name, std::string_view help, std::uint64_t value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} counter\n{} {}\n", name, help, name, name, value);
}

void gauge(std::string& out, std::string_view name, std::string_view help, std::uint64_t value) {
    out += fmt::format("# HELP {} {}\n# TYPE {} gauge\n{} {}\n", name, help, name, name, value);
}

template <class Buckets>
void histogram(std::string& out, std::string_view name, std::string_view help, const Buckets& buckets,
               std::uint64_t sum_us) {
    out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < pool::lease_latency_bounds_us.size(); ++i) {
        cumulative += buckets[i];
        out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name,
                           static_cast<double>(pool::lease_latency_bounds_us[i]) / 1e6, cumulative);
    }
    cumulative += buckets[pool::lease_latency_bounds_us.size()];
    out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n", name, cumulative);
    out += fmt::format("{}_sum {}\n{}_count {}\n", name, static_cast<double>(sum_us) / 1e6, name, cumulative);
}

}  // namespace

namespace {

// The method label comes from a fixed set: the method token is the client's
// choice (up to the header limit), and a label per distinct token would let
// anyone grow the metrics without bound.
std::string_view method_label(std::string_view method) noexcept {
    for (std::string_view known : {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"}) {
        if (method == known) return known;
    }
    return "other";
}

}  // namespace

void ServerMetrics::record_request(std::string_view method, std::string_view route, int status) {
    const std::lock_guard lock(mutex_);
    ++requests_[{std::string(method_label(method)), std::string(route), status}];
}

void ServerMetrics::record_error(std::string_view code) {
    const std::lock_guard lock(mutex_);
    ++errors_[std::string(code)];
}

std::string ServerMetrics::render(const pool::ServiceStats& stats) const {
    std::string out;
    {
        const std::lock_guard lock(mutex_);
        out += "# HELP forkvm_http_requests_total HTTP requests by method, route template and status.\n";
        out += "# TYPE forkvm_http_requests_total counter\n";
        for (const auto& [key, value] : requests_) {
            out += fmt::format("forkvm_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{}\"}} {}\n",
                               escape_label(std::get<0>(key)), escape_label(std::get<1>(key)),
                               std::get<2>(key), value);
        }
        out += "# HELP forkvm_http_errors_total Error responses by error code.\n";
        out += "# TYPE forkvm_http_errors_total counter\n";
        for (const auto& [code, value] : errors_) {
            out += fmt::format("forkvm_http_errors_total{{code=\"{}\"}} {}\n", escape_label(code), value);
        }
    }
    const auto& p = stats.pool;
    counter(out, "forkvm_leases_total", "Successful VM leases from the warm pool.", p.leases);
    counter(out, "forkvm_lease_timeouts_total", "Leases that found no warm VM in time.", p.lease_timeouts);
    histogram(out, "forkvm_lease_latency_seconds", "Time to lease a warm VM.", p.lease_latency_buckets,
              p.lease_latency_sum_us);
    gauge(out, "forkvm_pool_warm", "Paused VMs ready to lease.", p.warm);
    gauge(out, "forkvm_pool_forking", "Pool forks in flight.", p.forking);
    gauge(out, "forkvm_pool_leased", "Leased VMs alive.", p.leased);
    gauge(out, "forkvm_pool_min_warm", "Configured minimum of warm VMs.", stats.min_warm);
    gauge(out, "forkvm_pool_max_warm", "Configured maximum of warm plus forking VMs.", stats.max_warm);
    counter(out, "forkvm_forks_total", "Successful pool forks.", p.forks);
    counter(out, "forkvm_fork_failures_total", "Failed pool forks.", p.fork_failures);
    histogram(out, "forkvm_sandbox_fork_latency_seconds", "Time to fork a sandbox.",
              stats.fork_latency_buckets, stats.fork_latency_sum_us);
    histogram(out, "forkvm_exec_latency_seconds", "Duration of execs.", stats.exec_latency_buckets,
              stats.exec_latency_sum_us);
    counter(out, "forkvm_execs_total", "Execs run.", stats.execs);
    gauge(out, "forkvm_live_vms", "VMs alive (warm + forking + leased).", p.warm + p.forking + p.leased);
    gauge(out, "forkvm_sandboxes_live", "Live sandboxes.", stats.live_sandboxes);
    counter(out, "forkvm_sandboxes_created_total", "Sandboxes created.", stats.sandboxes_created);
    counter(out, "forkvm_sandboxes_expired_total", "Sandboxes expired by their TTL.",
            stats.sandboxes_expired);
    const auto& e = stats.egress;
    out +=
        "# HELP forkvm_egress_decisions_total Proxied connections by the decision on their request head: "
        "allowed (the proxy connects), denied (403 by the policy or the address check), refused (any other "
        "proxy error).\n";
    out += "# TYPE forkvm_egress_decisions_total counter\n";
    out += fmt::format("forkvm_egress_decisions_total{{decision=\"allowed\"}} {}\n", e.allowed);
    out += fmt::format("forkvm_egress_decisions_total{{decision=\"denied\"}} {}\n", e.denied);
    out += fmt::format("forkvm_egress_decisions_total{{decision=\"refused\"}} {}\n", e.refused);
    out += "# HELP forkvm_egress_bytes_total Bytes relayed by the egress proxy, by direction.\n";
    out += "# TYPE forkvm_egress_bytes_total counter\n";
    out += fmt::format("forkvm_egress_bytes_total{{direction=\"upstream\"}} {}\n", e.bytes_to_upstream);
    out += fmt::format("forkvm_egress_bytes_total{{direction=\"guest\"}} {}\n", e.bytes_to_guest);
    return out;
}

}  // namespace forkvm::server
