// IpAddress: a small value type for one IPv4 or IPv6 address, and IpPrefix
// (an address plus a prefix length) for CIDR ranges in the policy.
#pragma once

#include <array>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace forkvm::http_proxy {

enum class IpFamily : std::uint8_t { v4 = 4, v6 = 6 };

class IpAddress {
public:
    using Bytes = std::array<std::uint8_t, 16>;

    // 0.0.0.0 (so the type is default-constructible and regular).
    IpAddress() = default;

    // An IPv4 address from its 32-bit value in host order (127.0.0.1 == 0x7f000001).
    static IpAddress v4(std::uint32_t value);
    // An IPv6 address from its 16 bytes in network order.
    static IpAddress v6(const Bytes& bytes);

    // Strict textual forms only: dotted-quad decimal IPv4 ("10.1.2.3", no
    // leading zeros) or an IPv6 literal without brackets or zone. Used for
    // policy files, where the lenient inet_aton forms would only confuse.
    static std::optional<IpAddress> parse_strict(std::string_view text);

    IpFamily family() const { return family_; }
    bool is_v4() const { return family_ == IpFamily::v4; }
    bool is_v6() const { return family_ == IpFamily::v6; }

    // Network-order bytes; an IPv4 address uses the first 4, the rest are 0.
    const Bytes& bytes() const { return bytes_; }
    // Bytes that count for this family (4 or 16).
    std::size_t size() const { return is_v4() ? 4 : 16; }
    // The IPv4 value in host order; only meaningful for v4.
    std::uint32_t v4_value() const;

    // For ::ffff:a.b.c.d the IPv4 address a.b.c.d; otherwise *this. Lets rule
    // matching and connecting treat a mapped address as the IPv4 it denotes.
    IpAddress unmapped() const;

    // "127.0.0.1", "2001:db8::1", "::ffff:127.0.0.1" (RFC 5952 style, no brackets).
    std::string to_string() const;

    friend bool operator==(const IpAddress&, const IpAddress&) = default;
    friend auto operator<=>(const IpAddress&, const IpAddress&) = default;

private:
    IpFamily family_ = IpFamily::v4;
    Bytes bytes_{};
};

// A CIDR range. Host bits must be zero (checked by parse, so "10.1.2.3/8"
// is an error rather than a silent surprise).
class IpPrefix {
public:
    IpPrefix() = default;
    // A single address (/32 or /128).
    explicit IpPrefix(const IpAddress& address);

    // "10.0.0.0/8", "fd00::/8", or a bare address. nullopt on any error;
    // error (when given) receives the reason.
    static std::optional<IpPrefix> parse(std::string_view text, std::string* error = nullptr);

    const IpAddress& address() const { return address_; }
    unsigned length() const { return length_; }
    bool contains(const IpAddress& address) const;
    // "10.0.0.0/8", or just the address for a single-address prefix.
    std::string to_string() const;

    friend bool operator==(const IpPrefix&, const IpPrefix&) = default;

private:
    IpAddress address_;
    unsigned length_ = 32;
};

}  // namespace forkvm::http_proxy
