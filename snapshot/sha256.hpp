#pragma once
// SHA-256 (OpenSSL EVP) of bytes and of files. sha256_file streams the file
// in fixed chunks, so hashing a multi-GiB memory.bin needs O(1) memory.

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

struct evp_md_ctx_st;

namespace forkvm::snapshot {

using Sha256Digest = std::array<std::uint8_t, 32>;

[[nodiscard]] Sha256Digest sha256(std::span<const std::uint8_t> bytes);

// Incremental SHA-256 for data that streams by. Throws SnapshotError (io,
// naming `what`) if OpenSSL fails.
class Sha256Stream {
public:
    explicit Sha256Stream(std::string what);
    void update(std::span<const std::uint8_t> bytes);
    [[nodiscard]] Sha256Digest finish();

private:
    struct CtxDeleter {
        void operator()(evp_md_ctx_st* ctx) const noexcept;
    };
    [[noreturn]] void fail() const;
    std::string what_;
    std::unique_ptr<evp_md_ctx_st, CtxDeleter> ctx_;
};

// Throws SnapshotError: not_found when the file is missing, io otherwise.
[[nodiscard]] Sha256Digest sha256_file(const std::string& path);

// Lower-case hex, 64 characters.
[[nodiscard]] std::string to_hex(const Sha256Digest& digest);

// Parses 64 hex digits (either case); returns false on anything else.
[[nodiscard]] bool from_hex(std::string_view hex, Sha256Digest& out);

}  // namespace forkvm::snapshot
