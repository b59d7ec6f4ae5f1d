#include "snapshot/sha256.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <openssl/evp.h>
#include <string_view>
#include <vector>

#include "snapshot/snapshot_error.hpp"
#include "vmm/unique_fd.hpp"

namespace forkvm::snapshot {
namespace {

// 1 MiB: large enough that syscall overhead is noise, small enough to stay in
// cache and never matter next to guest memory.
constexpr std::size_t kChunkSize = std::size_t{1} << 20;

}  // namespace

void Sha256Stream::CtxDeleter::operator()(EVP_MD_CTX* ctx) const noexcept { EVP_MD_CTX_free(ctx); }

Sha256Stream::Sha256Stream(std::string what) : what_(std::move(what)), ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) != 1) fail();
}

void Sha256Stream::update(std::span<const std::uint8_t> bytes) {
    if (!bytes.empty() && EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size()) != 1) fail();
}

Sha256Digest Sha256Stream::finish() {
    Sha256Digest digest{};
    unsigned int len = 0;
    if (EVP_DigestFinal_ex(ctx_.get(), digest.data(), &len) != 1 || len != digest.size()) fail();
    return digest;
}

// OpenSSL failures here mean allocation failure or a broken library; they
// are reported as io errors rather than crashing.
void Sha256Stream::fail() const {
    throw SnapshotError(SnapshotErrorKind::io, what_, "OpenSSL SHA-256 failed");
}

Sha256Digest sha256(std::span<const std::uint8_t> bytes) {
    Sha256Stream hasher("<memory>");
    hasher.update(bytes);
    return hasher.finish();
}

Sha256Digest sha256_file(const std::string& path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd) {
        int err = errno;
        if (err == ENOENT) throw SnapshotError(SnapshotErrorKind::not_found, path, "no such file");
        throw io_error(path, "open", err);
    }
    Sha256Stream hasher(path);
    std::vector<std::uint8_t> buffer(kChunkSize);
    for (;;) {
        ssize_t n = ::read(fd.get(), buffer.data(), buffer.size());
        if (n < 0) {
            if (errno == EINTR) continue;
            throw io_error(path, "read", errno);
        }
        if (n == 0) break;
        hasher.update(std::span(buffer.data(), static_cast<std::size_t>(n)));
    }
    return hasher.finish();
}

std::string to_hex(const Sha256Digest& digest) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string out;
    out.reserve(digest.size() * 2);
    for (std::uint8_t byte : digest) {
        out.push_back(kDigits[byte >> 4]);
        out.push_back(kDigits[byte & 0x0f]);
    }
    return out;
}

bool from_hex(std::string_view hex, Sha256Digest& out) {
    if (hex.size() != out.size() * 2) return false;
    auto nibble = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
    };
    for (std::size_t i = 0; i < out.size(); ++i) {
        int hi = nibble(hex[2 * i]);
        int lo = nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = static_cast<std::uint8_t>((hi << 4) | lo);
    }
    return true;
}

}  // namespace forkvm::snapshot
