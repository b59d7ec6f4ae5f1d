#include "guest/protocol/crc32.hpp"

#include <array>

namespace forkvm::proto {

namespace {

// The 256-entry table is built at compile time: no static-init order issues
// and nothing to compute at agent start-up.
constexpr std::array<std::uint32_t, 256> make_table() {
    std::array<std::uint32_t, 256> table{};
    for (std::uint32_t i = 0; i < 256; ++i) {
        std::uint32_t c = i;
        for (int k = 0; k < 8; ++k) c = (c & 1U) != 0 ? 0xEDB88320U ^ (c >> 1U) : c >> 1U;
        table[i] = c;
    }
    return table;
}

constexpr std::array<std::uint32_t, 256> kTable = make_table();

}  // namespace

std::uint32_t crc32_update(std::uint32_t crc, std::span<const std::uint8_t> data) noexcept {
    crc = ~crc;
    for (std::uint8_t byte : data) crc = kTable[(crc ^ byte) & 0xFFU] ^ (crc >> 8U);
    return ~crc;
}

}  // namespace forkvm::proto
