#include "http_proxy/ip_address.hpp"

#include <arpa/inet.h>
#include <charconv>

namespace forkvm::http_proxy {

namespace {

// Dotted-quad decimal, exactly four parts, no leading zeros: the one IPv4
// spelling that every parser reads the same way.
std::optional<std::uint32_t> parse_dotted_quad(std::string_view text) {
    std::uint32_t value = 0;
    std::size_t pos = 0;
    for (int part = 0; part < 4; ++part) {
        if (part > 0) {
            if (pos >= text.size() || text[pos] != '.') return std::nullopt;
            ++pos;
        }
        std::size_t start = pos;
        unsigned octet = 0;
        while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9' && pos - start < 3) {
            octet = octet * 10 + static_cast<unsigned>(text[pos] - '0');
            ++pos;
        }
        std::size_t digits = pos - start;
        if (digits == 0 || octet > 255) return std::nullopt;
        if (digits > 1 && text[start] == '0') return std::nullopt;
        value = (value << 8) | octet;
    }
    if (pos != text.size()) return std::nullopt;
    return value;
}

}  // namespace

IpAddress IpAddress::v4(std::uint32_t value) {
    IpAddress a;
    a.family_ = IpFamily::v4;
    a.bytes_[0] = static_cast<std::uint8_t>(value >> 24);
    a.bytes_[1] = static_cast<std::uint8_t>(value >> 16);
    a.bytes_[2] = static_cast<std::uint8_t>(value >> 8);
    a.bytes_[3] = static_cast<std::uint8_t>(value);
    return a;
}

IpAddress IpAddress::v6(const Bytes& bytes) {
    IpAddress a;
    a.family_ = IpFamily::v6;
    a.bytes_ = bytes;
    return a;
}

std::optional<IpAddress> IpAddress::parse_strict(std::string_view text) {
    if (auto v4 = parse_dotted_quad(text)) return IpAddress::v4(*v4);
    // inet_pton needs a NUL-terminated string; bound the copy first.
    if (text.empty() || text.size() > 45) return std::nullopt;
    if (text.find('\0') != std::string_view::npos) return std::nullopt;
    std::string copy(text);
    Bytes bytes{};
    if (inet_pton(AF_INET6, copy.c_str(), bytes.data()) != 1) return std::nullopt;
    return IpAddress::v6(bytes);
}

std::uint32_t IpAddress::v4_value() const {
    return (std::uint32_t{bytes_[0]} << 24) | (std::uint32_t{bytes_[1]} << 16) |
           (std::uint32_t{bytes_[2]} << 8) | std::uint32_t{bytes_[3]};
}

IpAddress IpAddress::unmapped() const {
    if (!is_v6()) return *this;
    for (std::size_t i = 0; i < 10; ++i)
        if (bytes_[i] != 0) return *this;
    if (bytes_[10] != 0xff || bytes_[11] != 0xff) return *this;
    return IpAddress::v4((std::uint32_t{bytes_[12]} << 24) | (std::uint32_t{bytes_[13]} << 16) |
                         (std::uint32_t{bytes_[14]} << 8) | std::uint32_t{bytes_[15]});
}

std::string IpAddress::to_string() const {
    char buf[INET6_ADDRSTRLEN] = {};
    const int af = is_v4() ? AF_INET : AF_INET6;
    if (inet_ntop(af, bytes_.data(), buf, sizeof buf) == nullptr) return "?";
    return buf;
}

IpPrefix::IpPrefix(const IpAddress& address) : address_(address), length_(address.is_v4() ? 32 : 128) {}

std::optional<IpPrefix> IpPrefix::parse(std::string_view text, std::string* error) {
    auto fail = [&](const char* why) -> std::optional<IpPrefix> {
        if (error) *error = why;
        return std::nullopt;
    };
    const auto slash = text.find('/');
    auto address = IpAddress::parse_strict(text.substr(0, slash));
    if (!address)
        return fail("must be an IPv4 dotted quad (a.b.c.d) or an IPv6 address, optionally with /prefix");
    IpPrefix prefix(*address);
    if (slash == std::string_view::npos) return prefix;

    const std::string_view len_text = text.substr(slash + 1);
    const unsigned max_len = address->is_v4() ? 32 : 128;
    unsigned len = 0;
    if (len_text.empty() || len_text.size() > 3 || (len_text.size() > 1 && len_text[0] == '0'))
        return fail("prefix length must be a decimal number without leading zeros");
    const auto [end, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
    if (ec != std::errc{} || end != len_text.data() + len_text.size() || len > max_len)
        return fail(address->is_v4() ? "prefix length must be in 0..32" : "prefix length must be in 0..128");
    prefix.length_ = len;
    // Host bits must be zero: "10.1.2.3/8" almost always means a typo.
    const auto& b = address->bytes();
    IpAddress::Bytes masked = b;
    for (std::size_t i = 0; i < 16; ++i) {
        const unsigned bit_start = static_cast<unsigned>(i) * 8;
        if (bit_start >= len) {
            masked[i] = 0;
        } else if (bit_start + 8 > len) {
            const unsigned keep = len - bit_start;
            masked[i] = static_cast<std::uint8_t>(b[i] & (0xffu << (8 - keep)));
        }
    }
    if (masked != b) return fail("address has bits set beyond the prefix length");
    return prefix;
}

bool IpPrefix::contains(const IpAddress& address) const {
    if (address.family() != address_.family()) return false;
    const auto& a = address.bytes();
    const auto& p = address_.bytes();
    unsigned remaining = length_;
    for (std::size_t i = 0; i < 16 && remaining > 0; ++i) {
        if (remaining >= 8) {
            if (a[i] != p[i]) return false;
            remaining -= 8;
        } else {
            const auto mask = static_cast<std::uint8_t>(0xffu << (8 - remaining));
            if ((a[i] & mask) != (p[i] & mask)) return false;
            remaining = 0;
        }
    }
    return true;
}

std::string IpPrefix::to_string() const {
    const unsigned full = address_.is_v4() ? 32 : 128;
    if (length_ == full) return address_.to_string();
    return address_.to_string() + "/" + std::to_string(length_);
}

}  // namespace forkvm::http_proxy
