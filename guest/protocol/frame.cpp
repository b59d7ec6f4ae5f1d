#include "guest/protocol/frame.hpp"

#include <algorithm>
#include <cstring>

#include "guest/protocol/crc32.hpp"

namespace forkvm::proto {

namespace {

void put_u16(std::uint8_t* p, std::uint16_t v) {
    p[0] = static_cast<std::uint8_t>(v);
    p[1] = static_cast<std::uint8_t>(v >> 8U);
}

void put_u32(std::uint8_t* p, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8U * static_cast<unsigned>(i)));
}

std::uint16_t get_u16(const std::uint8_t* p) { return static_cast<std::uint16_t>(p[0] | (p[1] << 8U)); }

std::uint32_t get_u32(const std::uint8_t* p) {
    return static_cast<std::uint32_t>(p[0]) | (static_cast<std::uint32_t>(p[1]) << 8U) |
           (static_cast<std::uint32_t>(p[2]) << 16U) | (static_cast<std::uint32_t>(p[3]) << 24U);
}

// Fills the first 16 header bytes at `h` (everything but the CRC).
void write_header_prefix(std::uint8_t* h, MessageType type, std::uint32_t request_id,
                         std::uint32_t payload_len) {
    put_u32(h, kMagic);
    h[4] = kProtocolVersion;
    h[5] = static_cast<std::uint8_t>(type);
    put_u16(h + 6, 0);
    put_u32(h + 8, request_id);
    put_u32(h + 12, payload_len);
}

std::uint32_t frame_crc(const std::uint8_t* header, ByteSpan payload) {
    return crc32_update(crc32(ByteSpan(header, 16)), payload);
}

}  // namespace

std::size_t begin_frame(Bytes& out) {
    const std::size_t start = out.size();
    out.resize(start + kHeaderSize);
    return start;
}

ProtoError end_frame(Bytes& out, std::size_t start, MessageType type, std::uint32_t request_id) {
    const std::size_t payload_len = out.size() - start - kHeaderSize;
    if (payload_len > kMaxPayload) {
        out.resize(start);
        return ProtoError::payload_too_large;
    }
    std::uint8_t* h = out.data() + start;
    write_header_prefix(h, type, request_id, static_cast<std::uint32_t>(payload_len));
    put_u32(h + 16, frame_crc(h, ByteSpan(h + kHeaderSize, payload_len)));
    return ProtoError::none;
}

ProtoError append_frame(Bytes& out, MessageType type, std::uint32_t request_id, ByteSpan payload) {
    if (payload.size() > kMaxPayload) return ProtoError::payload_too_large;
    out.reserve(out.size() + kHeaderSize + payload.size());
    const std::size_t start = begin_frame(out);
    out.insert(out.end(), payload.begin(), payload.end());
    return end_frame(out, start, type, request_id);
}

Result<Bytes> encode_frame(MessageType type, std::uint32_t request_id, ByteSpan payload) {
    Bytes out;
    if (const ProtoError e = append_frame(out, type, request_id, payload); e != ProtoError::none) return e;
    return out;
}

std::size_t find_magic(ByteSpan data) noexcept {
    for (std::size_t i = 0; i < data.size(); ++i) {
        const std::size_t n = std::min(kMagicBytes.size(), data.size() - i);
        if (std::equal(kMagicBytes.begin(), kMagicBytes.begin() + static_cast<std::ptrdiff_t>(n),
                       data.begin() + static_cast<std::ptrdiff_t>(i)))
            return i;
    }
    return data.size();
}

FrameDecoder::FrameDecoder(std::uint32_t max_payload) noexcept
    : max_payload_(std::min(max_payload, kMaxPayload)) {}

std::size_t FrameDecoder::feed(ByteSpan data) {
    if (failed() || ready_) return 0;
    std::size_t used = 0;
    while (used < data.size()) {
        if (header_len_ < kHeaderSize) {
            const std::uint8_t byte = data[used++];
            header_[header_len_] = byte;
            // Check the magic byte by byte: noise is rejected at its first
            // byte instead of after a whole header's worth.
            if (header_len_ < kMagicBytes.size() && byte != kMagicBytes[header_len_]) {
                ++header_len_;
                fail(ProtoError::bad_magic);
                return used;
            }
            if (++header_len_ == kHeaderSize) {
                on_header_complete();
                if (failed() || ready_) return used;
            }
            continue;
        }
        const std::size_t want = payload_len_ - payload_.size();
        const std::size_t take = std::min(want, data.size() - used);
        const auto first = data.begin() + static_cast<std::ptrdiff_t>(used);
        payload_.insert(payload_.end(), first, first + static_cast<std::ptrdiff_t>(take));
        used += take;
        if (payload_.size() == payload_len_) {
            on_payload_complete();
            return used;
        }
    }
    return used;
}

void FrameDecoder::on_header_complete() {
    const std::uint8_t* h = header_.data();
    if (h[4] != kProtocolVersion) return fail(ProtoError::unsupported_version);
    if (get_u16(h + 6) != 0) return fail(ProtoError::nonzero_flags);
    if (!is_known_message_type(h[5])) return fail(ProtoError::unknown_type);
    const std::uint32_t len = get_u32(h + 12);
    // Rejected here, before a single payload byte is buffered.
    if (len > max_payload_) return fail(ProtoError::payload_too_large);
    type_ = static_cast<MessageType>(h[5]);
    request_id_ = get_u32(h + 8);
    payload_len_ = len;
    crc_ = get_u32(h + 16);
    payload_.clear();
    payload_.reserve(len);
    if (len == 0) on_payload_complete();
}

void FrameDecoder::on_payload_complete() {
    if (frame_crc(header_.data(), payload_) != crc_) return fail(ProtoError::crc_mismatch);
    ready_.emplace(Frame{type_, request_id_, std::move(payload_)});
    payload_ = Bytes();
    header_len_ = 0;
}

std::optional<Frame> FrameDecoder::take_frame() {
    std::optional<Frame> out = std::move(ready_);
    ready_.reset();
    return out;
}

void FrameDecoder::reset() noexcept {
    header_len_ = 0;
    payload_ = Bytes();
    payload_len_ = 0;
    ready_.reset();
    error_ = ProtoError::none;
}

std::size_t FrameDecoder::resync() noexcept {
    std::size_t discarded = 0;
    if (error_ == ProtoError::crc_mismatch) {
        discarded = header_len_ + payload_.size();
        header_len_ = 0;
    } else if (header_len_ > 0) {
        const ByteSpan rest(header_.data() + 1, header_len_ - 1);
        const std::size_t skip = 1 + find_magic(rest);
        std::memmove(header_.data(), header_.data() + skip, header_len_ - skip);
        header_len_ -= skip;
        discarded = skip;
    }
    payload_ = Bytes();
    payload_len_ = 0;
    error_ = ProtoError::none;
    // At least one byte was dropped, so the kept bytes (a magic or a magic
    // prefix and what followed it) are never a complete header: feed()
    // validates them once the header fills up again.
    return discarded;
}

std::size_t FrameDecoder::buffered_bytes() const noexcept {
    return ready_ ? 0 : header_len_ + payload_.size();
}

std::size_t FrameDecoder::allocated_bytes() const noexcept {
    return kHeaderSize + payload_.capacity() + (ready_ ? ready_->payload.capacity() : 0);
}

}  // namespace forkvm::proto
