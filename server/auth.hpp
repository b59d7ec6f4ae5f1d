#pragma once
// Bearer API keys. Keys are compared in constant time (CRYPTO_memcmp over
// SHA-256 digests, so neither content nor length leaks through timing), and
// a key is known to the rest of the server only by its owner id: the first
// 16 hex characters of its SHA-256. The key itself is never stored in a
// request or logged.

#include <array>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forkvm::server {

std::string owner_id_of(std::string_view api_key);

// The token of an "Authorization: Bearer <token>" header; nullopt otherwise.
std::optional<std::string_view> bearer_token(std::string_view authorization) noexcept;

class Authenticator {
public:
    Authenticator(const std::vector<std::string>& api_keys, const std::string& admin_key);

    // The owner id for a valid API key header, nullopt otherwise.
    std::optional<std::string> owner_for(std::string_view authorization) const;
    // /metrics: open when no admin key is configured.
    bool metrics_allowed(std::string_view authorization) const;

private:
    using Digest = std::array<unsigned char, 32>;
    static Digest digest(std::string_view key);

    struct Key {
        Digest digest;
        std::string owner;
    };
    std::vector<Key> keys_;
    std::optional<Digest> admin_;
};

}  // namespace forkvm::server
