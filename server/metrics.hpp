#pragma once
// The server's own counters (requests by method/route/status, errors by
// code) and the Prometheus text rendering of them plus pool::ServiceStats.

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <tuple>

#include "pool/sandbox_service.hpp"

namespace forkvm::server {

class ServerMetrics {
public:
    // route is the template ("/v1/sandboxes/{id}") or "unmatched", so label
    // cardinality stays bounded whatever clients send.
    void record_request(std::string_view method, std::string_view route, int status);
    void record_error(std::string_view code);

    // Prometheus exposition format 0.0.4.
    std::string render(const pool::ServiceStats& stats) const;

private:
    mutable std::mutex mutex_;
    std::map<std::tuple<std::string, std::string, int>, std::uint64_t> requests_;
    std::map<std::string, std::uint64_t> errors_;
};

}  // namespace forkvm::server
