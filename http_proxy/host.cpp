#include "http_proxy/host.hpp"

namespace forkvm::http_proxy {

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
unsigned hex_value(char c) {
    if (is_digit(c)) return static_cast<unsigned>(c - '0');
    if (c >= 'a' && c <= 'f') return static_cast<unsigned>(c - 'a' + 10);
    return static_cast<unsigned>(c - 'A' + 10);
}
char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// One inet_aton part, as strtoul(base 0) reads it: "0x1f" hex, "017" octal,
// otherwise decimal. glibc rejects a part whose value exceeds 32 bits, and a
// bare "0x" (strtoul stops after the "0" and inet_aton sees the 'x').
std::optional<std::uint64_t> parse_aton_part(std::string_view part) {
    if (part.empty() || !is_digit(part[0])) return std::nullopt;
    unsigned base = 10;
    std::size_t pos = 0;
    if (part.size() >= 2 && part[0] == '0' && (part[1] == 'x' || part[1] == 'X')) {
        base = 16;
        pos = 2;
        if (pos == part.size()) return std::nullopt;
    } else if (part[0] == '0') {
        base = 8;
    }
    std::uint64_t value = 0;
    for (; pos < part.size(); ++pos) {
        const char c = part[pos];
        unsigned digit = 0;
        if (base == 16) {
            if (!is_hex(c)) return std::nullopt;
            digit = hex_value(c);
        } else {
            if (!is_digit(c)) return std::nullopt;
            digit = static_cast<unsigned>(c - '0');
            if (digit >= base) return std::nullopt;
        }
        value = value * base + digit;
        // Leading zeros are harmless, but the value must never overflow.
        if (value > 0xffffffffULL) return std::nullopt;
    }
    return value;
}

// Whether the label would make WHATWG's "ends in a number" true.
bool is_numeric_label(std::string_view label) {
    if (label.empty()) return false;
    if (label.size() >= 2 && label[0] == '0' && (label[1] == 'x' || label[1] == 'X')) {
        for (std::size_t i = 2; i < label.size(); ++i)
            if (!is_hex(label[i])) return false;
        return true;
    }
    for (char c : label)
        if (!is_digit(c)) return false;
    return true;
}

std::optional<IpAddress> parse_v6_literal(std::string_view text) {
    auto parsed = IpAddress::parse_strict(text);
    if (!parsed || !parsed->is_v6()) return std::nullopt;
    return parsed;
}

HostParseResult error(std::string message) { return HostParseResult{std::nullopt, std::move(message)}; }

HostParseResult ip_host(const IpAddress& ip) {
    Host h;
    h.kind = Host::Kind::ip;
    h.ip = ip;
    return HostParseResult{h, {}};
}

}  // namespace

std::string Host::to_string() const {
    if (kind == Kind::domain) return name;
    if (ip.is_v6()) return "[" + ip.to_string() + "]";
    return ip.to_string();
}

std::optional<IpAddress> parse_inet_aton(std::string_view text) {
    static constexpr std::uint64_t kMaxLast[4] = {0xffffffffULL, 0xffffffULL, 0xffffULL, 0xffULL};
    std::uint64_t parts[4] = {};
    std::size_t count = 0;
    std::size_t start = 0;
    while (true) {
        const auto dot = text.find('.', start);
        const auto part =
            text.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
        if (count == 4) return std::nullopt;
        auto value = parse_aton_part(part);
        if (!value) return std::nullopt;
        parts[count++] = *value;
        if (dot == std::string_view::npos) break;
        start = dot + 1;
    }
    // All parts but the last are single bytes; the last fills the rest.
    std::uint64_t result = 0;
    for (std::size_t i = 0; i + 1 < count; ++i) {
        if (parts[i] > 0xff) return std::nullopt;
        result |= parts[i] << (24 - 8 * i);
    }
    if (parts[count - 1] > kMaxLast[count - 1]) return std::nullopt;
    result |= parts[count - 1];
    return IpAddress::v4(static_cast<std::uint32_t>(result));
}

bool is_valid_domain(std::string_view text) {
    if (text.empty() || text.size() > kMaxDomainLength) return false;
    std::size_t label_len = 0;
    char prev = '.';
    for (char c : text) {
        if (c == '.') {
            if (label_len == 0 || prev == '-') return false;
            label_len = 0;
        } else {
            const bool ok = (c >= 'a' && c <= 'z') || is_digit(c) || c == '-';
            if (!ok) return false;
            if (c == '-' && label_len == 0) return false;
            if (++label_len > kMaxLabelLength) return false;
        }
        prev = c;
    }
    return label_len > 0 && prev != '-';
}

HostParseResult parse_host(std::string_view text) {
    if (text.empty()) return error("empty host");
    if (text.size() > kMaxHostLength) return error("host is longer than 255 bytes");

    if (text.front() == '[') {
        if (text.back() != ']' || text.size() < 3) return error("unterminated IPv6 literal");
        const auto inner = text.substr(1, text.size() - 2);
        if (inner.find('%') != std::string_view::npos) return error("IPv6 zone ids are not allowed");
        auto ip = parse_v6_literal(inner);
        if (!ip) return error("invalid IPv6 literal");
        return ip_host(*ip);
    }
    if (text.find(':') != std::string_view::npos) {
        if (text.find('%') != std::string_view::npos) return error("IPv6 zone ids are not allowed");
        auto ip = parse_v6_literal(text);
        if (!ip) return error("invalid IPv6 literal");
        return ip_host(*ip);
    }

    std::string_view body = text;
    if (body.back() == '.') body.remove_suffix(1);
    if (body.empty()) return error("empty host");

    const auto last_dot = body.rfind('.');
    const auto last_label = last_dot == std::string_view::npos ? body : body.substr(last_dot + 1);
    if (is_numeric_label(last_label)) {
        auto ip = parse_inet_aton(body);
        if (!ip) return error("host ends in a number but is not a valid IPv4 address");
        return ip_host(*ip);
    }

    std::string name;
    name.reserve(body.size());
    for (char c : body) name.push_back(to_lower(c));
    if (!is_valid_domain(name))
        return error(
            "invalid domain name (letters, digits and '-' in dot-separated labels of 1..63 bytes, 253 "
            "in total)");
    Host h;
    h.kind = Host::Kind::domain;
    h.name = std::move(name);
    return HostParseResult{std::move(h), {}};
}

}  // namespace forkvm::http_proxy
