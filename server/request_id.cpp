#include "server/request_id.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <openssl/rand.h>

#include "server/encoding.hpp"

namespace forkvm::server {

bool is_valid_request_id(std::string_view id) noexcept {
    if (id.empty() || id.size() > 64) return false;
    for (const char c : id) {
        const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                        c == '.' || c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

std::string generate_request_id() {
    std::array<unsigned char, 8> bytes{};
    if (RAND_bytes(bytes.data(), static_cast<int>(bytes.size())) != 1) {
        // Uniqueness is all that matters here; fall back to time plus a counter.
        static std::atomic<std::uint64_t> counter{0};
        const auto v =
            static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count()) ^
            (counter.fetch_add(1) << 48U);
        for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<unsigned char>(v >> (8U * i));
    }
    return "req-" + hex_encode(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

std::string request_id_for(std::string_view client_value) {
    if (is_valid_request_id(client_value)) return std::string(client_value);
    return generate_request_id();
}

}  // namespace forkvm::server
