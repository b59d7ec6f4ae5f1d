#pragma once

#include <cstdint>

namespace forkvm::pool {

// Egress totals since the server started, for /metrics (pool/egress_service.hpp).
struct EgressStats {
    // What the proxy decided for each connection from its request head:
    // allowed (the policy and the address check said yes: the proxy
    // connects; that connect may still fail, 502/504, as logged when the
    // connection closes), denied (403: the policy or the address check said
    // no) and refused for any other reason (400 a bad or unsupported
    // request, 408 no head in time, 411, 414/431, 429 over the connection
    // limit, 502 a name not in the hosts map).
    std::uint64_t allowed = 0;
    std::uint64_t denied = 0;
    std::uint64_t refused = 0;
    // Bytes relayed, summed as each connection closes.
    std::uint64_t bytes_to_upstream = 0;
    std::uint64_t bytes_to_guest = 0;
    bool operator==(const EgressStats&) const = default;
};

}  // namespace forkvm::pool
