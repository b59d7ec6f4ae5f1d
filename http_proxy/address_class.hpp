// The address classifier: which destination addresses a sandbox may never
// reach unless the policy names them explicitly (allow_private). Everything
// that is not public, globally routed unicast is refused.
#pragma once

#include <optional>
#include <string>

#include "http_proxy/ip_address.hpp"

namespace forkvm::http_proxy {

struct AddressClass {
    // True when the address is in a refused (non-public) range.
    bool special = false;
    // Names the range, e.g. "169.254.0.0/16 link-local (cloud metadata)";
    // for IPv6 forms that embed IPv4 it names both, e.g.
    // "::ffff:0:0/96 IPv4-mapped 127.0.0.1: 127.0.0.0/8 loopback".
    std::string reason;
};

// IPv4 refused: 0/8, 10/8, 100.64/10, 127/8, 169.254/16, 172.16/12,
// 192.0.0/24, 192.0.2/24, 192.88.99/24, 192.168/16, 198.18/15, 198.51.100/24,
// 203.0.113/24, 224/4 and 240/4 (which includes 255.255.255.255).
//
// IPv6: only 2000::/3 global unicast is public, minus 2001::/32 (Teredo),
// 2001:2::/48 (benchmarking), 2001:db8::/32 and 3fff::/20 (documentation).
// Forms that embed an IPv4 address:
//  - ::ffff:0:0/96 IPv4-mapped: classified as the embedded IPv4 address
//    (a dual-stack socket connects to exactly that address).
//  - 64:ff9b::/96 NAT64: classified as the embedded IPv4 address (a NAT64
//    gateway translates to it); 64:ff9b:1::/48 local-use NAT64 is refused.
//  - 2002::/16 6to4: refused if the embedded IPv4 address is refused (a
//    6to4 relay would route toward it), otherwise classified as public.
//  - ::/96 IPv4-compatible (deprecated): always refused, since how a stack
//    treats it varies; :: and ::1 inside it get their own reasons.
// Everything else outside 2000::/3 is refused, with its own reason where it
// has a well-known name (fc00::/7, fe80::/10, fec0::/10, ff00::/8, 100::/64).
AddressClass classify_address(const IpAddress& address);

}  // namespace forkvm::http_proxy
