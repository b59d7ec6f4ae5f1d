#include "guest/protocol/wire.hpp"

#include <limits>

namespace forkvm::proto {

void Writer::put_le(std::uint64_t v, int size) {
    for (int i = 0; i < size; ++i)
        out_.push_back(static_cast<std::uint8_t>(v >> (8U * static_cast<unsigned>(i))));
}

void Writer::length(std::size_t n) {
    if (n > std::numeric_limits<std::uint32_t>::max()) ok_ = false;
    u32(static_cast<std::uint32_t>(n));
}

void Writer::bytes(ByteSpan data) {
    length(data.size());
    out_.insert(out_.end(), data.begin(), data.end());
}

void Writer::bytes(std::string_view data) {
    length(data.size());
    out_.insert(out_.end(), data.begin(), data.end());
}

void Writer::bytes_list(const std::vector<std::string>& items) {
    length(items.size());
    for (const std::string& item : items) bytes(item);
}

std::uint64_t Reader::get_le(std::size_t size) {
    if (remaining() < size) {
        fail(ProtoError::truncated);
        return 0;
    }
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < size; ++i) v |= static_cast<std::uint64_t>(data_[pos_ + i]) << (8U * i);
    pos_ += size;
    return v;
}

std::uint8_t Reader::u8() { return static_cast<std::uint8_t>(get_le(1)); }

bool Reader::boolean() {
    const std::uint8_t v = u8();
    if (v > 1) invalid();
    return v == 1;
}

ByteSpan Reader::field() {
    const std::uint32_t n = u32();
    if (!ok()) return {};
    if (n > remaining()) {
        fail(ProtoError::length_too_large);
        return {};
    }
    const ByteSpan out = data_.subspan(pos_, n);
    pos_ += n;
    return out;
}

Bytes Reader::bytes() {
    const ByteSpan f = field();
    return Bytes(f.begin(), f.end());
}

std::string Reader::string() {
    const ByteSpan f = field();
    return std::string(f.begin(), f.end());
}

std::uint32_t Reader::count(std::size_t min_element_size) {
    const std::uint32_t n = u32();
    if (!ok()) return 0;
    // Division, not multiplication: n * size could overflow. An element
    // always takes at least one byte, or a count would bound nothing.
    const std::size_t element = min_element_size == 0 ? 1 : min_element_size;
    if (n > remaining() / element) {
        fail(ProtoError::length_too_large);
        return 0;
    }
    return n;
}

std::vector<std::string> Reader::string_list() {
    const std::uint32_t n = count(4);  // every item has at least its u32 length
    std::vector<std::string> out;
    out.reserve(n);
    for (std::uint32_t i = 0; i < n && ok(); ++i) out.push_back(string());
    return out;
}

ProtoError Reader::finish() noexcept {
    if (!ok()) return error_;
    if (remaining() != 0) fail(ProtoError::trailing_bytes);
    return error_;
}

}  // namespace forkvm::proto
