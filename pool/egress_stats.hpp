#pragma once

#include <cstdint>

namespace forkvm::pool {

// Egress totals since the server started, for /metrics (pool/egress_service.hpp).
struct EgressStats {
    // Decisions on proxied connections: allowed (a CONNECT established or
    // a plain request forwarded), denied (403: the policy or the address
    // check said no) and refused for any other reason (400 a bad or
    // unsupported request, 408, 411, 429 over the connection limit, 502 a
    // name not in the hosts map or a failed connect, 504).
    std::uint64_t allowed = 0;
    std::uint64_t denied = 0;
    std::uint64_t refused = 0;
    // Bytes relayed, summed as each connection closes.
    std::uint64_t bytes_to_upstream = 0;
    std::uint64_t bytes_to_guest = 0;
    bool operator==(const EgressStats&) const = default;
};

}  // namespace forkvm::pool
