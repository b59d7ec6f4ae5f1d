#include "config/value_parse.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <limits>

namespace forkvm::config {

namespace {

std::string lower(std::string_view text) {
    std::string out(text);
    for (char& c : out) {
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    return out;
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }

void set_error(std::string* error, std::string message) {
    if (error) *error = std::move(message);
}

// Splits "64MiB" into the leading digits and the unit suffix.
struct NumberWithUnit {
    std::uint64_t number = 0;
    std::string unit;
};

std::optional<NumberWithUnit> split_number(std::string_view text, std::string_view what, std::string* error) {
    if (text.empty()) {
        set_error(error, "empty value, expected " + std::string(what));
        return std::nullopt;
    }
    if (text.front() == '-') {
        set_error(error, "must not be negative");
        return std::nullopt;
    }
    std::size_t digits = 0;
    while (digits < text.size() && is_digit(text[digits])) ++digits;
    if (digits == 0) {
        set_error(error, "not a number, expected " + std::string(what));
        return std::nullopt;
    }
    NumberWithUnit out;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + digits, out.number);
    if (ec == std::errc::result_out_of_range) {
        set_error(error, "number too large");
        return std::nullopt;
    }
    if (ec != std::errc() || ptr != text.data() + digits) {
        set_error(error, "not a number, expected " + std::string(what));
        return std::nullopt;
    }
    out.unit = lower(text.substr(digits));
    return out;
}

bool multiply(std::uint64_t a, std::uint64_t b, std::uint64_t max, std::uint64_t& out) {
    if (a != 0 && b > max / a) return false;
    out = a * b;
    return true;
}

bool valid_dns_name(std::string_view host) {
    if (host.empty() || host.size() > 253) return false;
    std::size_t label = 0;
    for (char c : host) {
        if (c == '.') {
            if (label == 0) return false;
            label = 0;
            continue;
        }
        const bool ok =
            is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_';
        if (!ok || ++label > 63) return false;
    }
    return label != 0;
}

bool valid_ipv6_literal(std::string_view host) {
    if (host.size() < 2 || host.size() > 45) return false;
    std::size_t colons = 0;
    for (char c : host) {
        const bool hex = is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (c == ':')
            ++colons;
        else if (!hex && c != '.')
            return false;
    }
    return colons >= 2;
}

}  // namespace

std::optional<std::int64_t> parse_int(std::string_view text, std::string* error) {
    if (text.empty()) {
        set_error(error, "empty value, expected an integer");
        return std::nullopt;
    }
    std::int64_t value = 0;
    auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc::result_out_of_range) {
        set_error(error, "number too large");
        return std::nullopt;
    }
    if (ec != std::errc() || ptr != text.data() + text.size()) {
        set_error(error, "not an integer");
        return std::nullopt;
    }
    return value;
}

std::optional<bool> parse_bool(std::string_view text, std::string* error) {
    const std::string value = lower(text);
    if (value == "true" || value == "1" || value == "yes" || value == "on") return true;
    if (value == "false" || value == "0" || value == "no" || value == "off") return false;
    set_error(error, "not a boolean, expected true or false");
    return std::nullopt;
}

std::optional<std::uint64_t> parse_size(std::string_view text, std::string* error) {
    auto parts = split_number(text, "a size such as 4096, 64KiB or 1G", error);
    if (!parts) return std::nullopt;
    struct Unit {
        std::string_view name;
        std::uint64_t factor;
    };
    static constexpr std::array<Unit, 14> units = {{
        {"", 1},
        {"b", 1},
        {"k", 1ULL << 10},
        {"kb", 1ULL << 10},
        {"kib", 1ULL << 10},
        {"m", 1ULL << 20},
        {"mb", 1ULL << 20},
        {"mib", 1ULL << 20},
        {"g", 1ULL << 30},
        {"gb", 1ULL << 30},
        {"gib", 1ULL << 30},
        {"t", 1ULL << 40},
        {"tb", 1ULL << 40},
        {"tib", 1ULL << 40},
    }};
    const auto* unit =
        std::find_if(units.begin(), units.end(), [&](const Unit& u) { return u.name == parts->unit; });
    if (unit == units.end()) {
        set_error(error, "unknown size unit " + quote_for_message(parts->unit) +
                             ", expected B, KiB, MiB, GiB or TiB");
        return std::nullopt;
    }
    std::uint64_t bytes = 0;
    if (!multiply(parts->number, unit->factor, std::numeric_limits<std::uint64_t>::max(), bytes)) {
        set_error(error, "size too large");
        return std::nullopt;
    }
    return bytes;
}

std::optional<std::chrono::milliseconds> parse_duration(std::string_view text, std::string* error) {
    auto parts = split_number(text, "a duration such as 500ms, 30s, 5m or 2h", error);
    if (!parts) return std::nullopt;
    std::uint64_t factor = 0;
    if (parts->unit.empty() || parts->unit == "ms")
        factor = 1;
    else if (parts->unit == "s")
        factor = 1000;
    else if (parts->unit == "m")
        factor = 60'000;
    else if (parts->unit == "h")
        factor = 3'600'000;
    else if (parts->unit == "d")
        factor = 86'400'000;
    else {
        set_error(error,
                  "unknown duration unit " + quote_for_message(parts->unit) + ", expected ms, s, m, h or d");
        return std::nullopt;
    }
    std::uint64_t ms = 0;
    const auto max = static_cast<std::uint64_t>(std::numeric_limits<std::chrono::milliseconds::rep>::max());
    if (!multiply(parts->number, factor, max, ms)) {
        set_error(error, "duration too large");
        return std::nullopt;
    }
    return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(ms));
}

std::vector<std::string> split_list(std::string_view text) {
    std::vector<std::string> items;
    while (true) {
        const std::size_t comma = text.find(',');
        std::string_view item = text.substr(0, comma);
        while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
        while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
        if (!item.empty()) items.emplace_back(item);
        if (comma == std::string_view::npos) break;
        text.remove_prefix(comma + 1);
    }
    return items;
}

bool valid_host_port(std::string_view text, std::string* error) {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
        set_error(error, "expected host:port");
        return false;
    }
    std::string_view host = text.substr(0, colon);
    const std::string_view port = text.substr(colon + 1);
    if (!host.empty() && host.front() == '[') {
        if (host.back() != ']' || !valid_ipv6_literal(host.substr(1, host.size() - 2))) {
            set_error(error, "bad IPv6 address in brackets");
            return false;
        }
    } else if (host.find(':') != std::string_view::npos) {
        set_error(error, "an IPv6 address must be written in brackets, e.g. [::1]:8080");
        return false;
    } else if (!valid_dns_name(host)) {
        set_error(error, host.empty() ? "missing host before ':'" : "bad host name");
        return false;
    }
    std::string port_error;
    const auto number = port.empty() || port.front() == '-' ? std::nullopt : parse_int(port, &port_error);
    if (!number || *number > 65535) {
        set_error(error, "port must be a number 0..65535");
        return false;
    }
    return true;
}

std::string format_size(std::uint64_t bytes) {
    static constexpr std::array<std::pair<std::uint64_t, std::string_view>, 4> units = {{
        {1ULL << 40, "TiB"},
        {1ULL << 30, "GiB"},
        {1ULL << 20, "MiB"},
        {1ULL << 10, "KiB"},
    }};
    if (bytes != 0) {
        for (const auto& [factor, name] : units) {
            if (bytes % factor == 0) return std::to_string(bytes / factor) + std::string(name);
        }
    }
    return std::to_string(bytes);
}

std::string format_duration(std::chrono::milliseconds duration) {
    const auto ms = duration.count();
    // Hours are the largest unit printed: "24h" reads better than "1d".
    static constexpr std::array<std::pair<std::chrono::milliseconds::rep, std::string_view>, 3> units = {{
        {3'600'000, "h"},
        {60'000, "m"},
        {1000, "s"},
    }};
    if (ms > 0) {
        for (const auto& [factor, name] : units) {
            if (ms % factor == 0) return std::to_string(ms / factor) + std::string(name);
        }
    }
    return std::to_string(ms) + "ms";
}

std::string quote_for_message(std::string_view text) {
    constexpr std::size_t max_chars = 64;
    std::string out = "\"";
    for (std::size_t i = 0; i < text.size() && i < max_chars; ++i) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c >= 0x20 && c < 0x7f) {
            out += static_cast<char>(c);
        } else {
            static constexpr std::string_view hex = "0123456789abcdef";
            out += "\\x";
            out += hex[c >> 4];
            out += hex[c & 0xf];
        }
    }
    if (text.size() > max_chars) out += "...";
    out += '"';
    return out;
}

}  // namespace forkvm::config
