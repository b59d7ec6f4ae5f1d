// Fuzz target: parse any JSON text as a policy. Invariants: a policy that
// parses round-trips (parse(to_json()) == policy); decisions on a few fixed
// destinations never throw and always give a reason; whatever the policy
// allows, the same policy with a deny rule for that host refuses (deny
// wins); an allowed IP literal also passes check_address; the empty policy
// allows nothing.
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "http_proxy/policy.hpp"

using namespace forkvm::http_proxy;

namespace {

// `host` is allowed on `port` by `policy`: a deny rule naming it must win.
void check_deny_wins(const Policy& policy, std::string_view host_text, std::uint16_t port) {
    const auto host = parse_host(host_text);
    if (!host) std::abort();  // nothing unparsable is ever allowed
    if (host.host->is_ip() && !check_address(host.host->ip, policy).allowed) std::abort();
    auto document = policy.to_json();
    if (document["deny"].size() >= kMaxRules) return;
    document["deny"].push_back(host.host->is_ip()
                                   ? nlohmann::json{{"ip", host.host->ip.unmapped().to_string()}}
                                   : nlohmann::json{{"domain", host.host->name}});
    const Policy denied = Policy::parse(document);
    if (denied.decide_connect(host_text, port).allowed ||
        denied.decide_request("GET", host_text, port, "/v1/../admin?x").allowed)
        std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 65536) return 0;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    const auto document = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (document.is_discarded()) return 0;

    Policy policy;
    try {
        policy = Policy::parse(document);
    } catch (const PolicyError& e) {
        if (std::string_view(e.what()).empty()) std::abort();
        return 0;
    }

    Policy again;
    try {
        again = Policy::parse(policy.to_json());
    } catch (const PolicyError&) {
        std::abort();
    }
    if (!(again == policy)) std::abort();

    for (const char* host :
         {"example.com", "a.pypi.org", "10.1.2.3", "[::1]", "169.254.169.254", "203.0.113.7", "api.test"}) {
        for (std::uint16_t port : {std::uint16_t{80}, std::uint16_t{443}, std::uint16_t{8080}}) {
            const Decision connect = policy.decide_connect(host, port);
            const Decision request = policy.decide_request("GET", host, port, "/v1/../admin?x");
            if (connect.reason.empty() || request.reason.empty()) std::abort();
            if (Policy{}.decide_connect(host, port).allowed) std::abort();
            if (connect.allowed || request.allowed) check_deny_wins(policy, host, port);
        }
    }
    (void)check_address(IpAddress::v4(0x0a000001), policy);
    return 0;
}
