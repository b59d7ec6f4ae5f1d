#pragma once
// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), bit-compatible with
// zlib's crc32(). Implemented here because the guest agent links statically
// with the standard library only.

#include <cstddef>
#include <cstdint>
#include <span>

namespace forkvm::proto {

// Continues a running CRC: crc32_update(crc32_update(0, a), b) == crc32(a ++ b).
// Start with 0 (the same convention as zlib's crc32(0, ...)).
[[nodiscard]] std::uint32_t crc32_update(std::uint32_t crc, std::span<const std::uint8_t> data) noexcept;

[[nodiscard]] inline std::uint32_t crc32(std::span<const std::uint8_t> data) noexcept {
    return crc32_update(0, data);
}

}  // namespace forkvm::proto
