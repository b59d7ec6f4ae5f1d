// Fuzz target: parse any JSON text as a policy. Invariants: a policy that
// parses round-trips (parse(to_json()) == policy); decisions on a few fixed
// destinations never throw.
#include <cstdint>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string_view>

#include "http_proxy/policy.hpp"

using namespace forkvm::http_proxy;

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

    for (const char* host : {"example.com", "a.pypi.org", "10.1.2.3", "[::1]", "169.254.169.254"}) {
        for (std::uint16_t port : {std::uint16_t{80}, std::uint16_t{443}}) {
            (void)policy.decide_connect(host, port);
            (void)policy.decide_request("GET", host, port, "/v1/../admin?x");
        }
    }
    (void)check_address(IpAddress::v4(0x0a000001), policy);
    return 0;
}
