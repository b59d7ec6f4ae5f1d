// Fuzz target: parse any string as a URL/CONNECT host and classify it.
// Invariants: our inet_aton reading agrees with glibc's inet_aton; a parsed
// host's text form parses back to the same host; every address gets a
// non-empty reason.
#include <arpa/inet.h>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "http_proxy/address_class.hpp"
#include "http_proxy/host.hpp"

using namespace forkvm::http_proxy;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > 1024) return 0;
    const std::string text(reinterpret_cast<const char*>(data), size);

    // Differential check against libc, on input without whitespace or NUL
    // (glibc's inet_aton ignores anything after whitespace).
    bool plain = !text.empty();
    for (char c : text) {
        const auto b = static_cast<unsigned char>(c);
        if (b <= 0x20 || b >= 0x7f) plain = false;
    }
    if (plain) {
        in_addr libc{};
        const bool libc_ok = inet_aton(text.c_str(), &libc) != 0;
        const auto ours = parse_inet_aton(text);
        if (libc_ok != ours.has_value()) std::abort();
        if (ours && ours->v4_value() != ntohl(libc.s_addr)) std::abort();
    }

    auto result = parse_host(text);
    if (!result) {
        if (result.error.empty()) std::abort();
        return 0;
    }
    const Host& host = *result.host;
    auto again = parse_host(host.to_string());
    if (!again || !(*again.host == host)) std::abort();
    if (host.is_ip()) {
        const auto klass = classify_address(host.ip);
        if (klass.reason.empty()) std::abort();
        // A mapped address is judged exactly like the IPv4 it denotes.
        if (host.ip.is_v6() && host.ip.unmapped().is_v4() &&
            klass.special != classify_address(host.ip.unmapped()).special)
            std::abort();
    } else if (!is_valid_domain(host.name)) {
        std::abort();
    }
    return 0;
}
