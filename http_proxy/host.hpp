// Host: what a URL or CONNECT target's host part means, read the way the OS
// would read it. IP literals in every form inet_aton accepts (so "0177.1"
// is 127.0.0.1, not a domain), IPv6 literals, and otherwise a validated,
// lower-cased domain name.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "http_proxy/ip_address.hpp"

namespace forkvm::http_proxy {

struct Host {
    enum class Kind { ip, domain };
    Kind kind = Kind::domain;
    IpAddress ip;      // when kind == ip
    std::string name;  // when kind == domain: lower case, no trailing dot

    bool is_ip() const { return kind == Kind::ip; }
    // The host as text for messages and for rebuilding a URL: the domain,
    // the IPv4 dotted quad, or "[v6]".
    std::string to_string() const;

    friend bool operator==(const Host&, const Host&) = default;
};

struct HostParseResult {
    std::optional<Host> host;
    std::string error;  // set when host is empty

    explicit operator bool() const { return host.has_value(); }
};

// Longest accepted host text (a domain is at most 253 bytes; IPv6 literals
// with brackets are shorter). Longer input is an error, not truncated.
inline constexpr std::size_t kMaxHostLength = 255;
inline constexpr std::size_t kMaxDomainLength = 253;
inline constexpr std::size_t kMaxLabelLength = 63;

// Parses a host as it appears in a URL authority or a CONNECT target (no
// port). Rules, in order:
//  - "[...]" must hold an IPv6 literal; a bare string with ':' is one too.
//    Zone ids ("fe80::1%eth0", "%25eth0") are rejected: a zone selects a
//    host interface, which a sandbox has no business naming.
//  - One trailing dot is stripped. If the last label is numeric (decimal
//    digits, or 0x followed by hex digits), the whole host is an IPv4
//    literal and must parse as inet_aton would (1 to 4 parts, each decimal,
//    0-prefixed octal or 0x-prefixed hex), else it is an error. This is the
//    WHATWG URL rule; it means "1.2.3.4.5" or "foo.0x1" can never reach DNS
//    as a name that some resolver might read as an address.
//  - Anything else is a domain: LDH labels of 1..63 bytes (letters, digits,
//    hyphen, not starting or ending with a hyphen), 253 bytes in total,
//    lower-cased. Underscores and non-ASCII (use punycode) are rejected.
HostParseResult parse_host(std::string_view text);

// The inet_aton reading of text (exposed for tests and the fuzzer):
// nullopt unless text is 1-4 parts of decimal/octal/hex numbers in range.
std::optional<IpAddress> parse_inet_aton(std::string_view text);

// Whether text is a syntactically valid domain name (already lower case, no
// trailing dot): used for policy rules, which must be canonical.
bool is_valid_domain(std::string_view text);

}  // namespace forkvm::http_proxy
