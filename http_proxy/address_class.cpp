#include "http_proxy/address_class.hpp"

#include <array>
#include <string_view>

namespace forkvm::http_proxy {

namespace {

struct V4Range {
    std::uint32_t base;
    unsigned length;
    std::string_view reason;
};

// Ordered so that a narrower, better-named range wins over a wider one.
constexpr std::array<V4Range, 15> kV4Refused{{
    {0x00000000, 8, "0.0.0.0/8 \"this network\" (0.0.0.0 reaches the local host)"},
    {0x0a000000, 8, "10.0.0.0/8 private-use"},
    {0x64400000, 10, "100.64.0.0/10 shared address space (carrier-grade NAT)"},
    {0x7f000000, 8, "127.0.0.0/8 loopback"},
    {0xa9fe0000, 16, "169.254.0.0/16 link-local (cloud metadata)"},
    {0xac100000, 12, "172.16.0.0/12 private-use"},
    {0xc0000000, 24, "192.0.0.0/24 IETF protocol assignments"},
    {0xc0000200, 24, "192.0.2.0/24 documentation (TEST-NET-1)"},
    {0xc0586300, 24, "192.88.99.0/24 6to4 relay anycast (deprecated)"},
    {0xc0a80000, 16, "192.168.0.0/16 private-use"},
    {0xc6120000, 15, "198.18.0.0/15 benchmarking"},
    {0xc6336400, 24, "198.51.100.0/24 documentation (TEST-NET-2)"},
    {0xcb007100, 24, "203.0.113.0/24 documentation (TEST-NET-3)"},
    {0xe0000000, 4, "224.0.0.0/4 multicast"},
    {0xf0000000, 4, "240.0.0.0/4 reserved (includes 255.255.255.255 broadcast)"},
}};

bool in_v4(std::uint32_t value, std::uint32_t base, unsigned length) {
    const std::uint32_t mask = length == 0 ? 0 : ~std::uint32_t{0} << (32 - length);
    return (value & mask) == base;
}

AddressClass classify_v4(std::uint32_t value) {
    for (const auto& r : kV4Refused)
        if (in_v4(value, r.base, r.length)) return AddressClass{true, std::string(r.reason)};
    return AddressClass{false, "public IPv4 unicast"};
}

using Bytes = IpAddress::Bytes;

// Whether the first `length` bits of b equal those of prefix.
bool in_v6(const Bytes& b, const Bytes& prefix, unsigned length) {
    for (std::size_t i = 0; i < 16 && length > 0; ++i) {
        const unsigned take = length >= 8 ? 8 : length;
        const auto mask = static_cast<std::uint8_t>(0xffu << (8 - take));
        if ((b[i] & mask) != (prefix[i] & mask)) return false;
        length -= take;
    }
    return true;
}

std::uint32_t v4_at(const Bytes& b, std::size_t offset) {
    return (std::uint32_t{b[offset]} << 24) | (std::uint32_t{b[offset + 1]} << 16) |
           (std::uint32_t{b[offset + 2]} << 8) | std::uint32_t{b[offset + 3]};
}

AddressClass embedded(std::string_view form, std::uint32_t v4, bool refuse_always) {
    auto inner = classify_v4(v4);
    std::string reason = std::string(form) + " " + IpAddress::v4(v4).to_string() + ": " + inner.reason;
    return AddressClass{refuse_always || inner.special, std::move(reason)};
}

constexpr Bytes bytes(std::initializer_list<std::uint8_t> head) {
    Bytes b{};
    std::size_t i = 0;
    for (auto v : head) b[i++] = v;
    return b;
}

AddressClass classify_v6(const Bytes& b) {
    const Bytes zero{};
    if (b == zero) return {true, ":: unspecified"};
    if (b == bytes({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1})) return {true, "::1 loopback"};
    if (in_v6(b, bytes({0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}), 96))
        return embedded("::ffff:0:0/96 IPv4-mapped", v4_at(b, 12), false);
    if (in_v6(b, zero, 96))
        return embedded("::/96 IPv4-compatible (deprecated, always refused)", v4_at(b, 12), true);
    if (in_v6(b, bytes({0x00, 0x64, 0xff, 0x9b}), 96))
        return embedded("64:ff9b::/96 NAT64", v4_at(b, 12), false);
    if (in_v6(b, bytes({0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}), 48))
        return {true, "64:ff9b:1::/48 local-use NAT64"};
    if (in_v6(b, bytes({0x01, 0x00}), 64)) return {true, "100::/64 discard-only"};
    if (in_v6(b, bytes({0xfc}), 7)) return {true, "fc00::/7 unique local"};
    if (in_v6(b, bytes({0xfe, 0x80}), 10)) return {true, "fe80::/10 link-local"};
    if (in_v6(b, bytes({0xfe, 0xc0}), 10)) return {true, "fec0::/10 site-local (deprecated)"};
    if (in_v6(b, bytes({0xff}), 8)) return {true, "ff00::/8 multicast"};
    if (!in_v6(b, bytes({0x20}), 3)) return {true, "reserved IPv6 (outside 2000::/3 global unicast)"};
    if (in_v6(b, bytes({0x20, 0x01, 0x00, 0x00}), 32)) return {true, "2001::/32 Teredo"};
    if (in_v6(b, bytes({0x20, 0x01, 0x00, 0x02, 0x00, 0x00}), 48)) return {true, "2001:2::/48 benchmarking"};
    if (in_v6(b, bytes({0x20, 0x01, 0x0d, 0xb8}), 32)) return {true, "2001:db8::/32 documentation"};
    if (in_v6(b, bytes({0x3f, 0xff}), 20)) return {true, "3fff::/20 documentation"};
    if (in_v6(b, bytes({0x20, 0x02}), 16)) {
        auto c = embedded("2002::/16 6to4", v4_at(b, 2), false);
        return c;
    }
    return {false, "public IPv6 unicast"};
}

}  // namespace

AddressClass classify_address(const IpAddress& address) {
    if (address.is_v4()) return classify_v4(address.v4_value());
    return classify_v6(address.bytes());
}

}  // namespace forkvm::http_proxy
