// What the proxy does with one client connection, decided from its request
// head alone, before any byte goes anywhere: refuse it (with the complete
// HTTP response to send back), or connect to one checked address and say
// what to send each side. Pure: no sockets, no clock; the networking half
// carries the plan out (docs/egress.md §6).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "http_proxy/hosts_map.hpp"
#include "http_proxy/ip_address.hpp"
#include "http_proxy/policy.hpp"
#include "http_proxy/request.hpp"

namespace forkvm::http_proxy {

struct ConnectPlan {
    // The status the client gets from the proxy itself: 200 when allowed
    // (a CONNECT's "Connection established", or the upstream's own answer
    // for plain HTTP), else the refusal's.
    int status = 0;
    // Why, for the log and the decision counter: the policy's reason, or
    // the parse error.
    std::string reason;
    // What the client asked for, for the log: "CONNECT api.test:443",
    // "GET http://api.test:80/v1/x"; "" when the head did not parse.
    std::string request_line;

    // Refused: the whole response to write to the client before closing.
    std::string refusal;

    // Allowed: connect to exactly this address (resolved through the hosts
    // map and checked there; an IPv4-mapped literal as its IPv4).
    std::optional<IpAddress> address;
    std::uint16_t port = 0;
    RequestKind kind = RequestKind::connect;
    // Bytes for the client once connected ("HTTP/1.1 200 Connection
    // established" for CONNECT; empty for plain HTTP).
    std::string to_client;
    // Bytes for the upstream before anything else: for plain HTTP the
    // request head rewritten to origin-form, with the Host header taken from
    // the URL, hop-by-hop and Proxy-* headers removed and "Connection:
    // close" (one request per connection: a second, pipelined request could
    // name another path). Empty for CONNECT.
    std::string to_upstream;
    // Plain HTTP: how many body bytes after the head to relay to the
    // upstream (Content-Length; 0 without one). Further client bytes are
    // not relayed. Unused for CONNECT (the tunnel relays everything).
    std::uint64_t body_bytes = 0;

    [[nodiscard]] bool allowed() const noexcept { return address.has_value(); }
};

// `head` is exactly what find_head_end measured (ending in CRLFCRLF).
[[nodiscard]] ConnectPlan plan_connection(std::string_view head, const Policy& policy, const HostsMap& hosts,
                                          const RequestLimits& limits = {});

// A complete response from the proxy itself: status line, a text/plain
// body "forkvm egress: <message>\n", Content-Length, Connection: close.
[[nodiscard]] std::string proxy_response(int status, std::string_view message);

}  // namespace forkvm::http_proxy
