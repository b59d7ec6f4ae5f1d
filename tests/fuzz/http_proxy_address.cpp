// Fuzz target: parse any string as a URL/CONNECT host and classify it.
// Invariants: our inet_aton reading agrees with glibc's inet_aton; a parsed
// host's text form parses back to the same host; every address gets a
// non-empty reason; every range the egress issue names is refused (an
// oracle written apart from address_class.cpp), an IPv4-mapped address
// exactly when its IPv4 is; an address's and a CIDR prefix's text forms
// read back strictly. Inputs of 4 or 16 bytes are also taken as raw
// addresses, so the classifier sees every address, not only parsable text.
#include <arpa/inet.h>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "http_proxy/address_class.hpp"
#include "http_proxy/host.hpp"

using namespace forkvm::http_proxy;

namespace {

// The ranges the egress issue lists, checked bit by bit here.
bool must_refuse_v4(std::uint32_t a) {
    auto in = [a](std::uint32_t base, unsigned length) {
        return (a >> (32 - length)) == (base >> (32 - length));
    };
    return in(0x00000000, 8) || in(0x0a000000, 8) || in(0x7f000000, 8) || in(0x64400000, 10) ||
           in(0xa9fe0000, 16) || in(0xac100000, 12) || in(0xc0a80000, 16) || a >= 0xe0000000;
}

bool must_refuse_v6(const IpAddress::Bytes& b) {
    IpAddress::Bytes loopback{};
    loopback[15] = 1;
    return b == IpAddress::Bytes{} || b == loopback || (b[0] & 0xfe) == 0xfc ||
           (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || b[0] == 0xff;
}

IpAddress mapped(std::uint32_t v4) {
    IpAddress::Bytes b{};
    b[10] = b[11] = 0xff;
    for (int i = 0; i < 4; ++i)
        b[static_cast<std::size_t>(12 + i)] = static_cast<std::uint8_t>(v4 >> (24 - 8 * i));
    return IpAddress::v6(b);
}

void check_address(const IpAddress& ip) {
    const auto klass = classify_address(ip);
    if (klass.reason.empty()) std::abort();
    if (ip.is_v4()) {
        if (must_refuse_v4(ip.v4_value()) && !klass.special) std::abort();
        if (classify_address(mapped(ip.v4_value())).special != klass.special) std::abort();
    } else if (must_refuse_v6(ip.bytes()) && !klass.special) {
        std::abort();
    }
    const auto again = IpAddress::parse_strict(ip.to_string());
    if (!again || !(*again == ip)) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 1024) return 0;
    const std::string text(reinterpret_cast<const char*>(data), size);

    if (size == 4) {
        check_address(IpAddress::v4((std::uint32_t{data[0]} << 24) | (std::uint32_t{data[1]} << 16) |
                                    (std::uint32_t{data[2]} << 8) | data[3]));
    } else if (size == 16) {
        IpAddress::Bytes b{};
        for (std::size_t i = 0; i < 16; ++i) b[i] = data[i];
        check_address(IpAddress::v6(b));
    }

    std::string prefix_error;
    if (const auto prefix = IpPrefix::parse(text, &prefix_error)) {
        if (!prefix->contains(prefix->address())) std::abort();
        const auto again = IpPrefix::parse(prefix->to_string());
        if (!again || !(*again == *prefix)) std::abort();
    } else if (prefix_error.empty()) {
        std::abort();
    }

    // Differential check against libc, on input without whitespace or NUL
    // (glibc's inet_aton ignores anything after whitespace).
    bool plain = !text.empty();
    for (char c : text) {
        const auto b = static_cast<unsigned char>(c);
        if (b <= 0x20 || b >= 0x7f) plain = false;
    }
    if (plain) {
        in_addr libc{};
        const bool libc_ok = inet_aton(text.c_str(), &libc) != 0;
        const auto ours = parse_inet_aton(text);
        if (libc_ok != ours.has_value()) std::abort();
        if (ours && ours->v4_value() != ntohl(libc.s_addr)) std::abort();
    }

    auto result = parse_host(text);
    if (!result) {
        if (result.error.empty()) std::abort();
        return 0;
    }
    const Host& host = *result.host;
    auto again = parse_host(host.to_string());
    if (!again || !(*again.host == host)) std::abort();
    if (host.is_ip()) {
        check_address(host.ip);
        // A mapped address is judged exactly like the IPv4 it denotes.
        if (host.ip.is_v6() && host.ip.unmapped().is_v4() &&
            classify_address(host.ip).special != classify_address(host.ip.unmapped()).special)
            std::abort();
    } else if (!is_valid_domain(host.name)) {
        std::abort();
    }
    return 0;
}
