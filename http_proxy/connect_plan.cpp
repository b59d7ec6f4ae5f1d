#include "http_proxy/connect_plan.hpp"

#include <array>
#include <vector>

namespace forkvm::http_proxy {
namespace {

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (lower(a[i]) != lower(b[i])) return false;
    return true;
}

std::string_view reason_phrase(int status) {
    switch (status) {
        case 200: return "OK";
        case 400: return "Bad Request";
        case 403: return "Forbidden";
        case 405: return "Method Not Allowed";
        case 411: return "Length Required";
        case 414: return "URI Too Long";
        case 408: return "Request Timeout";
        case 429: return "Too Many Requests";
        case 431: return "Request Header Fields Too Large";
        case 502: return "Bad Gateway";
        case 504: return "Gateway Timeout";
        case 505: return "HTTP Version Not Supported";
        default: return "Error";
    }
}

// Headers that describe one hop (RFC 9110 §7.6.1) or the proxy itself: the
// proxy drops them and sets its own Host and Connection.
bool hop_by_hop(std::string_view name, const std::vector<std::string>& named_by_connection) {
    static constexpr std::array<std::string_view, 9> kDropped = {
        "host",    "connection",       "keep-alive",        "te", "trailer", "transfer-encoding",
        "upgrade", "proxy-connection", "proxy-authenticate"};
    for (auto d : kDropped)
        if (iequals(name, d)) return true;
    if (name.size() >= 6 && iequals(name.substr(0, 6), "proxy-")) return true;  // Proxy-Authorization & co.
    for (const auto& n : named_by_connection)
        if (iequals(name, n)) return true;
    return false;
}

// The header names a Connection header lists ("close, X-Foo").
std::vector<std::string> connection_tokens(const ProxyRequest& req) {
    std::vector<std::string> out;
    for (const auto& h : req.headers) {
        if (!iequals(h.name, "connection")) continue;
        std::string_view v = h.value;
        while (!v.empty()) {
            const auto comma = v.find(',');
            std::string_view token = v.substr(0, comma);
            while (!token.empty() && (token.front() == ' ' || token.front() == '\t')) token.remove_prefix(1);
            while (!token.empty() && (token.back() == ' ' || token.back() == '\t')) token.remove_suffix(1);
            if (!token.empty()) out.emplace_back(token);
            if (comma == std::string_view::npos) break;
            v.remove_prefix(comma + 1);
        }
    }
    return out;
}

std::string authority(const Host& host, std::uint16_t port, std::uint16_t default_port) {
    std::string text = host.to_string();
    if (port != default_port) text += ":" + std::to_string(port);
    return text;
}

std::string origin_form_head(const ProxyRequest& req) {
    std::string head =
        req.method + " " + req.target + " HTTP/1." + std::to_string(req.minor_version) + "\r\n";
    head += "Host: " + authority(req.host, req.port, 80) + "\r\n";
    const auto named = connection_tokens(req);
    for (const auto& h : req.headers) {
        if (hop_by_hop(h.name, named)) continue;
        head += h.name + ": " + h.value + "\r\n";
    }
    head += "Connection: close\r\n\r\n";
    return head;
}

ConnectPlan refuse(ConnectPlan plan, int status, std::string reason) {
    plan.status = status;
    plan.reason = std::move(reason);
    plan.refusal = proxy_response(status, plan.reason);
    plan.address.reset();
    return plan;
}

}  // namespace

std::string proxy_response(int status, std::string_view message) {
    const std::string body = "forkvm egress: " + std::string(message) + "\n";
    return "HTTP/1.1 " + std::to_string(status) + " " + std::string(reason_phrase(status)) +
           "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n" + body;
}

ConnectPlan plan_connection(std::string_view head, const Policy& policy, const HostsMap& hosts,
                            const RequestLimits& limits) {
    ConnectPlan plan;
    const RequestParseResult parsed = parse_proxy_request(head, limits);
    if (!parsed) return refuse(std::move(plan), http_status(parsed.error), parsed.message);
    const ProxyRequest& req = *parsed.request;
    plan.kind = req.kind;
    plan.port = req.port;
    plan.request_line = req.kind == RequestKind::connect
                            ? "CONNECT " + authority(req.host, req.port, 0)
                            : req.method + " " + (req.kind == RequestKind::http ? "http://" : "https://") +
                                  authority(req.host, req.port, 0) + req.target;

    switch (req.kind) {
        case RequestKind::https_absolute:
            return refuse(
                std::move(plan), 400,
                "https:// URLs must be tunnelled with CONNECT; this client sent the URL to the proxy "
                "instead (busybox wget does): use a client that supports HTTPS proxies (curl)");
        case RequestKind::http:
            if (req.chunked) {
                return refuse(std::move(plan), 411,
                              "a chunked request body is not forwarded: send Content-Length");
            }
            break;
        case RequestKind::connect: break;
    }

    const Decision decision = req.kind == RequestKind::connect
                                  ? policy.decide_connect(req.host, req.port)
                                  : policy.decide_request(req.method, req.host, req.port, req.target);
    if (!decision.allowed) return refuse(std::move(plan), 403, decision.reason);

    // The address to connect to: the literal itself (checked by the
    // decision), or the first of the name's addresses that passes the
    // address check. Nothing is resolved twice.
    if (req.host.is_ip()) {
        plan.address = req.host.ip.unmapped();
    } else {
        const auto& candidates = hosts.resolve(req.host.name);
        if (candidates.empty()) {
            return refuse(std::move(plan), 502,
                          req.host.name + " is not in the host's name table; no DNS is used");
        }
        std::string refused;
        for (const IpAddress& candidate : candidates) {
            const Decision checked = check_address(candidate, policy);
            if (checked.allowed) {
                plan.address = candidate.unmapped();
                break;
            }
            if (refused.empty()) refused = checked.reason;
        }
        if (!plan.address)
            return refuse(std::move(plan), 403,
                          req.host.name + " resolves only to refused addresses: " + refused);
    }

    plan.status = 200;
    plan.reason = decision.reason;
    if (req.kind == RequestKind::connect) {
        plan.to_client = "HTTP/1.1 200 Connection established\r\n\r\n";
    } else {
        plan.to_upstream = origin_form_head(req);
        plan.body_bytes = req.content_length.value_or(0);
    }
    return plan;
}

}  // namespace forkvm::http_proxy
