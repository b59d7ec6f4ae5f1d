#include "vmm/devices/device_state.hpp"

#include <fmt/format.h>

namespace forkvm::vmm {

DeviceStateError::DeviceStateError(std::string_view device, std::string_view problem)
    : std::runtime_error(fmt::format("{} state: {}", device, problem)), device_(device), problem_(problem) {}

void ByteWriter::u16(std::uint16_t v) {
    for (int i = 0; i < 2; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

void ByteWriter::u32(std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

void ByteWriter::u64(std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

void ByteReader::fail(std::string_view problem) const { throw DeviceStateError(device_, problem); }

void ByteReader::need(std::size_t n, std::string_view what) const {
    if (n > remaining()) {
        fail(fmt::format("truncated: {} needs {} bytes, {} left", what, n, remaining()));
    }
}

std::uint8_t ByteReader::u8(std::string_view what) {
    need(1, what);
    return data_[pos_++];
}

std::uint16_t ByteReader::u16(std::string_view what) {
    need(2, what);
    std::uint16_t v = 0;
    for (std::size_t i = 0; i < 2; ++i) v = static_cast<std::uint16_t>(v | (data_[pos_ + i] << (8 * i)));
    pos_ += 2;
    return v;
}

std::uint32_t ByteReader::u32(std::string_view what) {
    need(4, what);
    std::uint32_t v = 0;
    for (std::size_t i = 0; i < 4; ++i) v |= std::uint32_t{data_[pos_ + i]} << (8 * i);
    pos_ += 4;
    return v;
}

std::uint64_t ByteReader::u64(std::string_view what) {
    need(8, what);
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < 8; ++i) v |= std::uint64_t{data_[pos_ + i]} << (8 * i);
    pos_ += 8;
    return v;
}

std::span<const std::uint8_t> ByteReader::bytes(std::size_t n, std::string_view what) {
    need(n, what);
    auto out = data_.subspan(pos_, n);
    pos_ += n;
    return out;
}

std::span<const std::uint8_t> ByteReader::length_prefixed(std::size_t max, std::string_view what) {
    const std::uint32_t len = u32(fmt::format("{} length", what));
    if (len > max) fail(fmt::format("{} length {} exceeds capacity {}", what, len, max));
    return bytes(len, what);
}

bool ByteReader::boolean(std::string_view what) {
    const std::uint8_t v = u8(what);
    if (v > 1) fail(fmt::format("{} is {}, not 0 or 1", what, v));
    return v == 1;
}

void ByteReader::expect_version(std::uint8_t expected) {
    const std::uint8_t v = u8("version");
    if (v != expected) fail(fmt::format("unsupported version {} (this build reads version {})", v, expected));
}

void ByteReader::expect_end() const {
    if (remaining() != 0) fail(fmt::format("{} trailing bytes", remaining()));
}

}  // namespace forkvm::vmm
