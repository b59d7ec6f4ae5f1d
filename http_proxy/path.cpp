#include "http_proxy/path.hpp"

#include <vector>

namespace forkvm::http_proxy {

namespace {

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
unsigned hex_value(char c) {
    if (is_digit(c)) return static_cast<unsigned>(c - '0');
    if (c >= 'a' && c <= 'f') return static_cast<unsigned>(c - 'a' + 10);
    return static_cast<unsigned>(c - 'A' + 10);
}
bool is_unreserved(char c) {
    return is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

// pchar minus '%' (handled separately) and ';' (refused), plus '/'.
bool is_plain_path_char(char c) {
    if (is_unreserved(c)) return true;
    switch (c) {
        case '!':
        case '$':
        case '&':
        case '\'':
        case '(':
        case ')':
        case '*':
        case '+':
        case ',':
        case '=':
        case ':':
        case '@':
        case '/': return true;
        default: return false;
    }
}

PathResult fail(std::string message) { return PathResult{std::nullopt, std::move(message)}; }

}  // namespace

PathResult normalize_path(std::string_view target) {
    if (target.size() > kMaxPathLength) return fail("path is longer than 8192 bytes");
    if (target.find('#') != std::string_view::npos) return fail("fragment ('#') in request path");
    const auto query = target.find('?');
    const std::string_view raw = target.substr(0, query);
    if (raw.empty() || raw.front() != '/') return fail("path must start with '/'");

    // Pass 1: validate characters and decode unreserved escapes.
    std::string decoded;
    decoded.reserve(raw.size());
    for (std::size_t i = 0; i < raw.size(); ++i) {
        const char c = raw[i];
        if (c == '%') {
            if (i + 2 >= raw.size()) return fail("truncated percent-escape in path");
            if (!is_hex(raw[i + 1]) || !is_hex(raw[i + 2])) return fail("malformed percent-escape in path");
            const auto value = static_cast<char>(hex_value(raw[i + 1]) * 16 + hex_value(raw[i + 2]));
            i += 2;
            if (is_unreserved(value)) {
                decoded.push_back(value);
                continue;
            }
            const auto byte = static_cast<unsigned char>(value);
            if (value == '/' || value == '\\' || value == '%' || value == ';' || byte < 0x20 || byte == 0x7f)
                return fail("percent-escape of '/', '\\', '%', ';' or a control character in path");
            constexpr char kHex[] = "0123456789ABCDEF";
            decoded.push_back('%');
            decoded.push_back(kHex[byte >> 4]);
            decoded.push_back(kHex[byte & 0xf]);
            continue;
        }
        if (c == ';') return fail("';' in path (path parameters are not supported)");
        if (c == '\\') return fail("'\\' in path");
        if (!is_plain_path_char(c)) return fail("invalid character in path");
        decoded.push_back(c);
    }

    // Pass 2: segments. decoded starts with '/'.
    std::vector<std::string_view> segments;
    bool trailing_slash = false;
    std::string_view rest(decoded);
    rest.remove_prefix(1);
    while (true) {
        const auto slash = rest.find('/');
        const auto segment = rest.substr(0, slash);
        const bool last = slash == std::string_view::npos;
        if (segment.empty()) {
            if (last) trailing_slash = true;
        } else if (segment == ".") {
            if (last) trailing_slash = true;
        } else if (segment == "..") {
            if (segments.empty()) return fail("'..' above the root in path");
            segments.pop_back();
            if (last) trailing_slash = true;
        } else {
            segments.push_back(segment);
            if (last) trailing_slash = false;
        }
        if (last) break;
        rest.remove_prefix(slash + 1);
    }

    std::string out;
    out.reserve(decoded.size());
    for (const auto& s : segments) {
        out.push_back('/');
        out.append(s);
    }
    if (out.empty() || trailing_slash) out.push_back('/');
    return PathResult{std::move(out), {}};
}

bool path_has_prefix(std::string_view path, std::string_view prefix) {
    if (prefix.empty() || path.substr(0, prefix.size()) != prefix) return false;
    if (path.size() == prefix.size() || prefix.back() == '/') return true;
    return path[prefix.size()] == '/';
}

}  // namespace forkvm::http_proxy
