#include "http_proxy/request.hpp"

#include <array>

namespace forkvm::http_proxy {

namespace {

constexpr std::string_view kCrlf = "\r\n";

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
char to_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (to_lower(a[i]) != to_lower(b[i])) return false;
    return true;
}

// RFC 9110 tchar.
bool is_tchar(char c) {
    if (is_alpha(c) || is_digit(c)) return true;
    switch (c) {
        case '!':
        case '#':
        case '$':
        case '%':
        case '&':
        case '\'':
        case '*':
        case '+':
        case '-':
        case '.':
        case '^':
        case '_':
        case '`':
        case '|':
        case '~': return true;
        default: return false;
    }
}

bool is_token(std::string_view s) {
    if (s.empty()) return false;
    for (char c : s)
        if (!is_tchar(c)) return false;
    return true;
}

// Characters that may appear in a request-target (RFC 3986): unreserved,
// gen-delims, sub-delims and '%'. Everything else (controls, space, '"',
// '<', '>', '\', '^', '`', '{', '|', '}', non-ASCII) is refused.
bool is_uri_char(char c) {
    if (is_alpha(c) || is_digit(c)) return true;
    switch (c) {
        case '-':
        case '.':
        case '_':
        case '~':
        case ':':
        case '/':
        case '?':
        case '#':
        case '[':
        case ']':
        case '@':
        case '!':
        case '$':
        case '&':
        case '\'':
        case '(':
        case ')':
        case '*':
        case '+':
        case ',':
        case ';':
        case '=':
        case '%': return true;
        default: return false;
    }
}

bool is_field_value_char(char c) {
    const auto b = static_cast<unsigned char>(c);
    return b == '\t' || (b >= 0x20 && b != 0x7f);
}

RequestParseResult fail(RequestError error, std::string message) {
    return RequestParseResult{std::nullopt, error, std::move(message)};
}

// "80" -> 80; 1..65535, 1-5 digits, no sign or leading '+'.
std::optional<std::uint16_t> parse_port(std::string_view text) {
    if (text.empty() || text.size() > 5) return std::nullopt;
    unsigned value = 0;
    for (char c : text) {
        if (!is_digit(c)) return std::nullopt;
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value == 0 || value > 65535) return std::nullopt;
    return static_cast<std::uint16_t>(value);
}

struct Authority {
    Host host;
    std::optional<std::uint16_t> port;
};

// host [":" port], host being "[v6]", an IPv4 literal or a name.
std::optional<Authority> parse_authority(std::string_view text, std::string& error) {
    if (text.empty()) {
        error = "empty host";
        return std::nullopt;
    }
    if (text.find('@') != std::string_view::npos) {
        error = "userinfo (user@host) is not allowed";
        return std::nullopt;
    }
    std::string_view host_text;
    std::string_view rest;
    if (text.front() == '[') {
        const auto close = text.find(']');
        if (close == std::string_view::npos) {
            error = "unterminated IPv6 literal";
            return std::nullopt;
        }
        host_text = text.substr(0, close + 1);
        rest = text.substr(close + 1);
    } else {
        const auto colon = text.find(':');
        host_text = text.substr(0, colon);
        rest = colon == std::string_view::npos ? std::string_view{} : text.substr(colon);
    }
    Authority out;
    if (!rest.empty()) {
        if (rest.front() != ':') {
            error = "junk after host";
            return std::nullopt;
        }
        out.port = parse_port(rest.substr(1));
        if (!out.port) {
            error = "port must be a decimal number in 1..65535";
            return std::nullopt;
        }
    }
    auto host = parse_host(host_text);
    if (!host) {
        error = host.error;
        return std::nullopt;
    }
    out.host = *host.host;
    return out;
}

RequestParseResult parse_target(ProxyRequest& req, std::string_view target) {
    for (char c : target)
        if (!is_uri_char(c)) return fail(RequestError::bad_request, "invalid character in request target");

    if (req.method == "CONNECT") {
        // authority-form only: host:port, nothing else.
        if (target.find('/') != std::string_view::npos || target.find('?') != std::string_view::npos ||
            target.find('#') != std::string_view::npos)
            return fail(RequestError::bad_request, "CONNECT target must be host:port");
        std::string error;
        auto authority = parse_authority(target, error);
        if (!authority) return fail(RequestError::bad_request, "CONNECT target: " + error);
        if (!authority->port) return fail(RequestError::bad_request, "CONNECT target needs a port");
        req.kind = RequestKind::connect;
        req.host = authority->host;
        req.port = *authority->port;
        return {};
    }

    if (target.front() == '/')
        return fail(RequestError::bad_request, "origin-form request (GET /path) sent to a proxy");
    if (target == "*") return fail(RequestError::bad_request, "asterisk-form request sent to a proxy");
    const auto scheme_end = target.find("://");
    if (scheme_end == std::string_view::npos)
        return fail(RequestError::bad_request, "request target is not an absolute URL");
    const auto scheme = target.substr(0, scheme_end);
    std::uint16_t default_port = 80;
    if (iequals(scheme, "http")) {
        req.kind = RequestKind::http;
    } else if (iequals(scheme, "https")) {
        req.kind = RequestKind::https_absolute;
        default_port = 443;
    } else {
        return fail(RequestError::bad_request, "unsupported URL scheme (only http, or CONNECT for https)");
    }
    const auto rest = target.substr(scheme_end + 3);
    const auto path_start = rest.find_first_of("/?#");
    const auto authority_text = rest.substr(0, path_start);
    std::string error;
    auto authority = parse_authority(authority_text, error);
    if (!authority) return fail(RequestError::bad_request, "URL host: " + error);
    req.host = authority->host;
    req.port = authority->port.value_or(default_port);

    std::string_view path =
        path_start == std::string_view::npos ? std::string_view{} : rest.substr(path_start);
    if (path.find('#') != std::string_view::npos)
        return fail(RequestError::bad_request, "fragment in request URL");
    if (path.empty())
        req.target = "/";
    else if (path.front() == '?')
        req.target = "/" + std::string(path);
    else
        req.target = std::string(path);
    return {};
}

RequestParseResult parse_request_line(ProxyRequest& req, std::string_view line, const RequestLimits& limits) {
    if (line.size() > limits.max_request_line)
        return fail(RequestError::uri_too_long, "request line too long");
    for (char c : line) {
        const auto b = static_cast<unsigned char>(c);
        if (b < 0x20 || b == 0x7f)
            return fail(RequestError::bad_request, "control character in request line");
    }
    const auto sp1 = line.find(' ');
    const auto sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
    if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
        return fail(RequestError::bad_request, "request line must be METHOD SP TARGET SP VERSION");
    const auto method = line.substr(0, sp1);
    const auto target = line.substr(sp1 + 1, sp2 - sp1 - 1);
    const auto version = line.substr(sp2 + 1);
    if (!is_token(method)) return fail(RequestError::bad_request, "invalid method");
    if (target.empty()) return fail(RequestError::bad_request, "empty request target");

    if (version == "HTTP/1.1") {
        req.minor_version = 1;
    } else if (version == "HTTP/1.0") {
        req.minor_version = 0;
    } else if (version.size() == 8 && version.substr(0, 5) == "HTTP/" && is_digit(version[5]) &&
               version[6] == '.' && is_digit(version[7])) {
        return fail(RequestError::version_not_supported, "only HTTP/1.0 and HTTP/1.1 are supported");
    } else {
        return fail(RequestError::bad_request, "invalid HTTP version");
    }

    if (method != "CONNECT" && !is_forwardable_method(method))
        return fail(RequestError::method_not_allowed, "method " + std::string(method) + " is not forwarded");
    req.method = std::string(method);
    return parse_target(req, target);
}

RequestParseResult parse_header_line(ProxyRequest& req, std::string_view line, const RequestLimits& limits) {
    if (line.size() > limits.max_header_line)
        return fail(RequestError::header_too_large, "header line too long");
    if (req.headers.size() >= limits.max_headers)
        return fail(RequestError::header_too_large, "too many headers");
    if (line.front() == ' ' || line.front() == '\t')
        return fail(RequestError::bad_request, "obsolete line folding in headers");
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) return fail(RequestError::bad_request, "header line without ':'");
    const auto name = line.substr(0, colon);
    // No whitespace before the colon (RFC 9112 5.1: must be rejected).
    if (!is_token(name)) return fail(RequestError::bad_request, "invalid header name");
    auto value = line.substr(colon + 1);
    for (char c : value)
        if (!is_field_value_char(c))
            return fail(RequestError::bad_request, "control character in header value");
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    req.headers.push_back(Header{std::string(name), std::string(value)});
    return {};
}

// Message framing: the headers request smuggling plays with.
RequestParseResult check_framing(ProxyRequest& req) {
    int hosts = 0;
    int transfer_encodings = 0;
    for (const auto& h : req.headers) {
        if (iequals(h.name, "Host")) {
            if (++hosts > 1) return fail(RequestError::bad_request, "more than one Host header");
        } else if (iequals(h.name, "Content-Length")) {
            if (h.value.empty() || h.value.size() > 15)
                return fail(RequestError::bad_request, "invalid Content-Length");
            std::uint64_t length = 0;
            for (char c : h.value) {
                if (!is_digit(c)) return fail(RequestError::bad_request, "invalid Content-Length");
                length = length * 10 + static_cast<std::uint64_t>(c - '0');
            }
            if (req.content_length && *req.content_length != length)
                return fail(RequestError::bad_request, "conflicting Content-Length headers");
            req.content_length = length;
        } else if (iequals(h.name, "Transfer-Encoding")) {
            if (++transfer_encodings > 1 || !iequals(h.value, "chunked"))
                return fail(RequestError::bad_request,
                            "only a single \"Transfer-Encoding: chunked\" is supported");
            req.chunked = true;
        }
    }
    if (req.chunked && req.content_length)
        return fail(RequestError::bad_request, "both Transfer-Encoding and Content-Length");
    if (req.kind == RequestKind::connect && (req.chunked || req.content_length.value_or(0) != 0))
        return fail(RequestError::bad_request, "CONNECT request with a body");
    return {};
}

}  // namespace

int http_status(RequestError error) {
    switch (error) {
        case RequestError::none: return 200;
        case RequestError::bad_request: return 400;
        case RequestError::method_not_allowed: return 405;
        case RequestError::uri_too_long: return 414;
        case RequestError::header_too_large: return 431;
        case RequestError::version_not_supported: return 505;
    }
    return 400;
}

bool is_forwardable_method(std::string_view method) {
    static constexpr std::array<std::string_view, 7> kMethods{"GET",    "HEAD",  "POST",   "PUT",
                                                              "DELETE", "PATCH", "OPTIONS"};
    for (auto m : kMethods)
        if (m == method) return true;
    return false;
}

const Header* ProxyRequest::header(std::string_view name) const {
    for (const auto& h : headers)
        if (iequals(h.name, name)) return &h;
    return nullptr;
}

HeadScan find_head_end(std::string_view buffer, const RequestLimits& limits) {
    const auto window = buffer.substr(0, limits.max_head);
    const auto end = window.find("\r\n\r\n");
    const auto first_line_end = window.find(kCrlf);
    const auto first_line_length = first_line_end == std::string_view::npos ? window.size() : first_line_end;
    if (first_line_length > limits.max_request_line) return {HeadStatus::request_line_too_long, 0};
    if (end != std::string_view::npos) return {HeadStatus::complete, end + 4};
    if (buffer.size() >= limits.max_head) return {HeadStatus::too_large, 0};
    return {HeadStatus::incomplete, 0};
}

RequestParseResult parse_proxy_request(std::string_view head, const RequestLimits& limits) {
    if (head.size() > limits.max_head) return fail(RequestError::header_too_large, "request head too large");
    if (head.size() < 4 || head.substr(head.size() - 4) != "\r\n\r\n")
        return fail(RequestError::bad_request, "request head must end with CRLF CRLF");
    // Drop the final empty line; every remaining line ends in CRLF.
    std::string_view rest = head.substr(0, head.size() - 2);

    ProxyRequest req;
    bool first = true;
    while (!rest.empty()) {
        const auto eol = rest.find(kCrlf);
        // eol always exists: rest ends in CRLF.
        const auto line = rest.substr(0, eol);
        rest.remove_prefix(eol + 2);
        if (line.find('\r') != std::string_view::npos || line.find('\n') != std::string_view::npos)
            return fail(RequestError::bad_request, "bare CR or LF in request head");
        if (first) {
            if (line.empty()) return fail(RequestError::bad_request, "empty request line");
            auto r = parse_request_line(req, line, limits);
            if (r.error != RequestError::none) return r;
            first = false;
            continue;
        }
        if (line.empty()) return fail(RequestError::bad_request, "empty line inside the request head");
        auto r = parse_header_line(req, line, limits);
        if (r.error != RequestError::none) return r;
    }
    if (first) return fail(RequestError::bad_request, "empty request");
    auto r = check_framing(req);
    if (r.error != RequestError::none) return r;
    return RequestParseResult{std::move(req), RequestError::none, {}};
}

}  // namespace forkvm::http_proxy
