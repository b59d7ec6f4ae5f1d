// Fuzz target: parse any bytes as a proxy request head (and as a request
// path). Invariants: an error has a message and a 4xx/5xx status; a parsed
// request has a port and a re-parsable host; path normalization is
// idempotent.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "http_proxy/path.hpp"
#include "http_proxy/request.hpp"

using namespace forkvm::http_proxy;

namespace {

void check_path(std::string_view target) {
    auto once = normalize_path(target);
    if (!once) {
        if (once.error.empty()) std::abort();
        return;
    }
    const std::string& path = *once.path;
    if (path.empty() || path.front() != '/') std::abort();
    if (path.find("//") != std::string::npos || path.find("/../") != std::string::npos) std::abort();
    auto twice = normalize_path(path);
    if (!twice || *twice.path != path) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 65536) return 0;
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);

    check_path(bytes);

    RequestLimits limits;
    const auto scan = find_head_end(bytes, limits);
    if (scan.status == HeadStatus::complete && (scan.length > bytes.size() || scan.length > limits.max_head))
        std::abort();

    auto result = parse_proxy_request(bytes, limits);
    if (!result) {
        if (result.message.empty() || result.error == RequestError::none) std::abort();
        if (http_status(result.error) < 400) std::abort();
        return 0;
    }
    const auto& req = *result.request;
    if (req.port == 0 || req.method.empty()) std::abort();
    auto host = parse_host(req.host.to_string());
    if (!host || !(*host.host == req.host)) std::abort();
    if (req.kind == RequestKind::connect) {
        if (req.method != "CONNECT" || !req.target.empty()) std::abort();
    } else {
        if (req.target.empty() || req.target.front() != '/') std::abort();
        if (!is_forwardable_method(req.method)) std::abort();
        check_path(req.target);
    }
    if (req.chunked && req.content_length) std::abort();
    return 0;
}
