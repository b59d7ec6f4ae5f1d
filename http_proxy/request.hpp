// Parsing of the request head a client sends to an HTTP/1.x proxy:
//   CONNECT host:port HTTP/1.1          (authority-form; "[v6]:port")
//   GET http://host[:port]/path?q HTTP/1.1   (absolute-form)
//   GET https://host/path HTTP/1.1      (what busybox wget sends to an HTTP
//                                        proxy instead of CONNECT: reported
//                                        as its own kind so the proxy can
//                                        refuse it with a clear message)
// Strict and bounded: untrusted bytes from the sandbox.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "http_proxy/host.hpp"

namespace forkvm::http_proxy {

enum class RequestError {
    none,
    bad_request,            // 400: malformed, origin-form, userinfo, bad host/port, smuggling risks
    method_not_allowed,     // 405: a method the proxy does not forward (TRACE, unknown, ...)
    uri_too_long,           // 414: request line longer than max_request_line
    header_too_large,       // 431: a header line, the header count or the whole head too large
    version_not_supported,  // 505: HTTP/x.y other than 1.0 and 1.1
};

// The HTTP status to answer with (200 for none).
int http_status(RequestError error);

struct RequestLimits {
    std::size_t max_request_line = 8192;  // bytes, without CRLF
    std::size_t max_header_line = 8192;   // bytes, without CRLF
    std::size_t max_headers = 64;
    std::size_t max_head = 32768;  // whole head including the final CRLFCRLF
};

enum class RequestKind {
    connect,         // CONNECT tunnel
    http,            // absolute-form http:// request to forward
    https_absolute,  // absolute-form https:// request: refuse ("use CONNECT")
};

struct Header {
    std::string name;   // as sent (tokens only)
    std::string value;  // leading/trailing SP/HTAB trimmed
};

struct ProxyRequest {
    RequestKind kind = RequestKind::connect;
    std::string method;
    Host host;
    std::uint16_t port = 0;  // explicit, or 80/443 by scheme
    std::string target;      // path and query as sent ("/" if empty); empty for CONNECT
    int minor_version = 1;   // HTTP/1.<minor_version>
    std::vector<Header> headers;
    std::optional<std::uint64_t> content_length;
    bool chunked = false;  // Transfer-Encoding: chunked

    // The first header with this name (case-insensitive), or nullptr.
    const Header* header(std::string_view name) const;
};

struct RequestParseResult {
    std::optional<ProxyRequest> request;
    RequestError error = RequestError::none;
    std::string message;

    explicit operator bool() const { return request.has_value(); }
};

enum class HeadStatus { incomplete, complete, request_line_too_long, too_large };

struct HeadScan {
    HeadStatus status = HeadStatus::incomplete;
    std::size_t length = 0;  // bytes of the head (with CRLFCRLF) when complete
};

// Finds the end of the request head in the bytes received so far, so the
// caller reads no more than max_head bytes before deciding.
HeadScan find_head_end(std::string_view buffer, const RequestLimits& limits = {});

// Parses one complete head: exactly the bytes find_head_end measured,
// ending in CRLFCRLF. Lines must end in CRLF (a bare LF or CR is an error).
RequestParseResult parse_proxy_request(std::string_view head, const RequestLimits& limits = {});

// The methods the proxy forwards in absolute-form (and that policy rules
// may name): GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS.
bool is_forwardable_method(std::string_view method);

}  // namespace forkvm::http_proxy
