#include "server/auth.hpp"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "server/encoding.hpp"

namespace forkvm::server {

Authenticator::Digest Authenticator::digest(std::string_view key) {
    Digest out{};
    SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(), out.data());
    return out;
}

std::string owner_id_of(std::string_view api_key) {
    std::array<unsigned char, 32> d{};
    SHA256(reinterpret_cast<const unsigned char*>(api_key.data()), api_key.size(), d.data());
    const std::string hex = hex_encode(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()));
    return hex.substr(0, 16);
}

std::optional<std::string_view> bearer_token(std::string_view authorization) noexcept {
    constexpr std::string_view scheme = "bearer ";
    if (authorization.size() <= scheme.size()) return std::nullopt;
    for (std::size_t i = 0; i < scheme.size(); ++i) {
        char c = authorization[i];
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
        if (c != scheme[i]) return std::nullopt;
    }
    std::string_view token = authorization.substr(scheme.size());
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
    if (token.empty()) return std::nullopt;
    return token;
}

Authenticator::Authenticator(const std::vector<std::string>& api_keys, const std::string& admin_key) {
    for (const auto& key : api_keys) {
        if (key.empty()) continue;
        keys_.push_back(Key{digest(key), owner_id_of(key)});
    }
    if (!admin_key.empty()) admin_ = digest(admin_key);
}

std::optional<std::string> Authenticator::owner_for(std::string_view authorization) const {
    const auto token = bearer_token(authorization);
    if (!token) return std::nullopt;
    const Digest presented = digest(*token);
    const std::string* found = nullptr;
    // No early exit: every configured key is compared.
    for (const auto& key : keys_) {
        if (CRYPTO_memcmp(key.digest.data(), presented.data(), presented.size()) == 0) found = &key.owner;
    }
    if (found == nullptr) return std::nullopt;
    return *found;
}

bool Authenticator::metrics_allowed(std::string_view authorization) const {
    if (!admin_) return true;
    const auto token = bearer_token(authorization);
    if (!token) return false;
    const Digest presented = digest(*token);
    return CRYPTO_memcmp(admin_->data(), presented.data(), presented.size()) == 0;
}

}  // namespace forkvm::server
