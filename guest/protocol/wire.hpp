#pragma once
// Bounds-checked binary Writer/Reader for message payloads (little-endian).
//   bytes      = u32 length + raw bytes (binary-safe: any byte, NUL included)
//   bytes list = u32 count + that many `bytes`
// The Reader is sticky: after the first failure every read returns a zero
// value and error() keeps the first cause, so a decoder reads all its fields
// and checks once. Lengths and counts are checked against the bytes left
// before anything is allocated, so a hostile count cannot make a huge
// allocation.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "guest/protocol/frame.hpp"
#include "guest/protocol/result.hpp"

namespace forkvm::proto {

class Writer {
public:
    // Appends to `out` (which may already hold e.g. a frame header).
    explicit Writer(Bytes& out) noexcept : out_(out) {}

    void u8(std::uint8_t v) { out_.push_back(v); }
    void u16(std::uint16_t v) { put_le(v, 2); }
    void u32(std::uint32_t v) { put_le(v, 4); }
    void u64(std::uint64_t v) { put_le(v, 8); }
    void i32(std::int32_t v) { u32(static_cast<std::uint32_t>(v)); }
    void i64(std::int64_t v) { u64(static_cast<std::uint64_t>(v)); }
    void boolean(bool v) { u8(v ? 1 : 0); }
    void bytes(ByteSpan data);
    void bytes(std::string_view data);
    void bytes_list(const std::vector<std::string>& items);

    // False if a length did not fit in a u32 (the payload is then garbage;
    // it is far above kMaxPayload anyway, so framing it fails too).
    [[nodiscard]] bool ok() const noexcept { return ok_; }

private:
    void put_le(std::uint64_t v, int size);
    void length(std::size_t n);

    Bytes& out_;
    bool ok_ = true;
};

class Reader {
public:
    explicit Reader(ByteSpan data) noexcept : data_(data) {}

    std::uint8_t u8();
    std::uint16_t u16() { return static_cast<std::uint16_t>(get_le(2)); }
    std::uint32_t u32() { return static_cast<std::uint32_t>(get_le(4)); }
    std::uint64_t u64() { return get_le(8); }
    std::int32_t i32() { return static_cast<std::int32_t>(u32()); }
    std::int64_t i64() { return static_cast<std::int64_t>(u64()); }
    // Only 0 and 1 are valid (so decode(encode(x)) is canonical).
    bool boolean();
    Bytes bytes();
    std::string string();  // `bytes` as a std::string (binary-safe)
    std::vector<std::string> string_list();

    // Reads a u32 element count for a list whose elements take at least
    // min_element_size bytes each; fails with length_too_large (returning 0)
    // if that many elements cannot fit in what is left.
    std::uint32_t count(std::size_t min_element_size);
    // Marks the payload invalid (e.g. an enum out of range).
    void invalid() noexcept { fail(ProtoError::invalid_value); }

    [[nodiscard]] bool ok() const noexcept { return error_ == ProtoError::none; }
    [[nodiscard]] ProtoError error() const noexcept { return error_; }
    [[nodiscard]] std::size_t remaining() const noexcept { return data_.size() - pos_; }
    // The final check of a decoder: the first error, or trailing_bytes if
    // anything is left unread.
    [[nodiscard]] ProtoError finish() noexcept;

private:
    std::uint64_t get_le(std::size_t size);
    // A length-prefixed field: the span of its bytes, empty on failure.
    ByteSpan field();
    void fail(ProtoError error) noexcept {
        if (error_ == ProtoError::none) error_ = error;
        pos_ = data_.size();
    }

    ByteSpan data_;
    std::size_t pos_ = 0;
    ProtoError error_ = ProtoError::none;
};

}  // namespace forkvm::proto
