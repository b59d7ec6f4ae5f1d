// Fuzz target: parse any bytes as a proxy request head (and as a request
// path), with the default limits and with small ones (so every "too large"
// branch is reached). Invariants: a complete head is within the limit and
// ends in CRLFCRLF; an error has a message and a 4xx/5xx status; a parsed
// request has a port, a re-parsable host, at most max_headers headers and
// no CR or LF in a header value; path normalization is idempotent. The
// head also goes through plan_connection with a fixed policy: a refusal is
// a complete response; an allowed plan's address passes the address check
// and a rewritten head names one Host and no Proxy-* header.
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "http_proxy/connect_plan.hpp"
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

void check_request(std::string_view head, const RequestLimits& limits) {
    auto result = parse_proxy_request(head, limits);
    if (!result) {
        if (result.message.empty() || result.error == RequestError::none) std::abort();
        if (http_status(result.error) < 400) std::abort();
        return;
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
    if (req.headers.size() > limits.max_headers) std::abort();
    for (const auto& h : req.headers)
        if (h.name.empty() || h.value.find_first_of("\r\n") != std::string::npos) std::abort();
}

const Policy& fixed_policy() {
    static const Policy policy = Policy::parse(nlohmann::json::parse(R"({
      "allow": [{"domain": "api.test"}, {"domain": "*.pub.test", "methods": ["GET"], "paths": ["/v1/"]},
                {"ip": "8.8.8.0/24", "ports": [443, 8080]}],
      "deny": [{"domain": "no.pub.test"}], "allow_private": ["10.0.0.7"]})"));
    return policy;
}

const HostsMap& fixed_hosts() {
    static const HostsMap hosts = HostsMap::parse(
        {"api.test=8.8.4.4", "a.pub.test=127.0.0.1", "a.pub.test=9.9.9.9", "b.pub.test=10.0.0.7"});
    return hosts;
}

void check_plan(std::string_view head, const RequestLimits& limits) {
    const ConnectPlan plan = plan_connection(head, fixed_policy(), fixed_hosts(), limits);
    if (plan.reason.empty()) std::abort();
    if (!plan.allowed()) {
        if (plan.status < 400 || !plan.refusal.starts_with("HTTP/1.1 " + std::to_string(plan.status) + " "))
            std::abort();
        return;
    }
    if (plan.status != 200 || !plan.refusal.empty()) std::abort();
    if (!check_address(*plan.address, fixed_policy()).allowed) std::abort();
    if (plan.kind == RequestKind::connect) {
        if (!plan.to_upstream.empty() || plan.to_client.empty()) std::abort();
        return;
    }
    std::string up = plan.to_upstream;  // header names compared case-insensitively
    for (char& c : up) c = (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    if (!up.ends_with("\r\n\r\n") || up.find("\r\nhost:") == std::string::npos ||
        up.find("\r\nhost:") != up.rfind("\r\nhost:") || up.find("\r\nproxy-") != std::string::npos ||
        up.find("\r\nupgrade:") != std::string::npos || up.find("\r\n\r\n") != up.size() - 4)
        std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 65536) return 0;
    const std::string_view bytes(reinterpret_cast<const char*>(data), size);

    check_path(bytes);

    for (const RequestLimits limits : {RequestLimits{}, RequestLimits{64, 64, 4, 256}}) {
        const auto scan = find_head_end(bytes, limits);
        if (scan.status == HeadStatus::complete) {
            if (scan.length > bytes.size() || scan.length > limits.max_head) std::abort();
            if (!bytes.substr(0, scan.length).ends_with("\r\n\r\n")) std::abort();
            check_request(bytes.substr(0, scan.length), limits);
            check_plan(bytes.substr(0, scan.length), limits);
        }
        check_request(bytes, limits);  // the parser alone, on any bytes
    }
    return 0;
}
