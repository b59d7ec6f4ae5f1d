#pragma once
// Frame layer of the agent protocol: a 20-byte little-endian header, then the
// payload. Layout (byte offsets):
//   0  u32 magic = 0x4D564B46 ("FKVM" on the wire)
//   4  u8  version = 1
//   5  u8  type (MessageType)
//   6  u16 flags (0 in v1)
//   8  u32 request_id (0 = not tied to a request)
//  12  u32 payload_len (<= the decoder's max_payload <= kMaxPayload)
//  16  u32 crc32 over bytes 0..15 of the header followed by the payload
// See docs/agent-protocol.md for the rationale and the message catalogue.

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

#include "guest/protocol/message_type.hpp"
#include "guest/protocol/result.hpp"

namespace forkvm::proto {

using Bytes = std::vector<std::uint8_t>;
using ByteSpan = std::span<const std::uint8_t>;

inline constexpr std::uint32_t kMagic = 0x4D564B46;
inline constexpr std::array<std::uint8_t, 4> kMagicBytes = {'F', 'K', 'V', 'M'};
inline constexpr std::uint8_t kProtocolVersion = 1;
inline constexpr std::size_t kHeaderSize = 20;
// Hard cap for any payload, whatever a decoder is configured with.
inline constexpr std::uint32_t kMaxPayload = 1U << 20U;

struct Frame {
    MessageType type{};
    std::uint32_t request_id = 0;
    Bytes payload;

    bool operator==(const Frame&) const = default;
};

// Appends one complete frame to `out` (no reallocation beyond what `out`
// needs). Fails with payload_too_large, leaving `out` unchanged, when the
// payload exceeds kMaxPayload.
[[nodiscard]] ProtoError append_frame(Bytes& out, MessageType type, std::uint32_t request_id,
                                      ByteSpan payload);
[[nodiscard]] Result<Bytes> encode_frame(MessageType type, std::uint32_t request_id, ByteSpan payload);

// In-place framing, for payloads serialised straight into the output buffer
// (no intermediate copy): begin_frame reserves the header and returns its
// offset; after appending the payload, end_frame fills in the header and CRC.
// On payload_too_large end_frame truncates `out` back to `start`.
[[nodiscard]] std::size_t begin_frame(Bytes& out);
[[nodiscard]] ProtoError end_frame(Bytes& out, std::size_t start, MessageType type, std::uint32_t request_id);

// Resync helper (guest side, line noise at start-up): the offset of the first
// position in `data` where a frame could start, i.e. where the magic begins,
// or where a trailing partial magic begins; data.size() if neither.
[[nodiscard]] std::size_t find_magic(ByteSpan data) noexcept;

// Incremental decoder. Feed arbitrary chunks (one byte at a time works); take
// frames out one at a time. Holds at most kHeaderSize + max_payload bytes:
// the declared payload length is checked against max_payload as soon as the
// header is complete, before any payload byte is buffered, and at most one
// frame is held until taken.
//
// After any error the decoder is sticky-failed (feed consumes nothing) until
// reset() (host side: the VM is marked broken) or resync() (guest side).
class FrameDecoder {
public:
    // max_payload is clamped to kMaxPayload.
    explicit FrameDecoder(std::uint32_t max_payload = kMaxPayload) noexcept;

    // Consumes bytes from `data` until a frame is complete, an error occurs
    // or `data` is used up; returns how many bytes it consumed. Consumes
    // nothing while a complete frame waits in take_frame() or after an error.
    [[nodiscard]] std::size_t feed(ByteSpan data);

    [[nodiscard]] bool has_frame() const noexcept { return ready_.has_value(); }
    // The completed frame, if any; the decoder then continues with the next.
    [[nodiscard]] std::optional<Frame> take_frame();

    // Feeds all of `data`, calling on_frame(Frame&&) for each complete frame.
    // Returns the error that stopped it (ProtoError::none if all was used).
    template <class OnFrame>
    ProtoError feed_all(ByteSpan data, OnFrame&& on_frame) {
        while (true) {
            const std::size_t used = feed(data);
            data = data.subspan(used);
            if (auto frame = take_frame()) {
                on_frame(std::move(*frame));
                continue;
            }
            if (failed() || data.empty()) return error_;
        }
    }

    [[nodiscard]] bool failed() const noexcept { return error_ != ProtoError::none; }
    [[nodiscard]] ProtoError error() const noexcept { return error_; }

    // Forgets any partial frame, pending frame and error.
    void reset() noexcept;
    // Clears the error and slides past the bad data: the first buffered
    // header byte is dropped and the rest rescanned for the magic, so a
    // frame that starts inside a garbage header is still found. A payload
    // already consumed (CRC mismatch) is dropped as a whole. Returns the
    // number of bytes discarded.
    std::size_t resync() noexcept;

    [[nodiscard]] std::uint32_t max_payload() const noexcept { return max_payload_; }
    // Bytes of a partial frame held right now (header + payload so far).
    [[nodiscard]] std::size_t buffered_bytes() const noexcept;
    // Bytes allocated for buffering; never exceeds kHeaderSize + max_payload().
    [[nodiscard]] std::size_t allocated_bytes() const noexcept;

private:
    void on_header_complete();
    void on_payload_complete();
    void fail(ProtoError error) noexcept { error_ = error; }

    std::uint32_t max_payload_;
    std::array<std::uint8_t, kHeaderSize> header_{};
    std::size_t header_len_ = 0;
    MessageType type_{};
    std::uint32_t request_id_ = 0;
    std::uint32_t payload_len_ = 0;
    std::uint32_t crc_ = 0;
    Bytes payload_;
    std::optional<Frame> ready_;
    ProtoError error_ = ProtoError::none;
};

}  // namespace forkvm::proto
