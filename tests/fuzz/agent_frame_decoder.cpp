// Fuzz target: the incremental frame decoder on hostile byte streams.
// Input byte 0 picks the mode and max_payload, byte 1 seeds the chunk sizes.
//   mode 0: the rest is a raw byte stream.
//   mode 1: the rest describes frames ([type][len][len bytes]...) that are
//           encoded validly, so the fuzzer gets past the CRC; one byte may
//           then be flipped.
// Invariants (abort() on violation): the decoder never holds more than
// kHeaderSize + max_payload bytes; frames it yields are in range and
// re-encode to the bytes they came from; the result does not depend on how
// the stream is chunked; valid frames always come back intact and a damaged
// frame never does; resync after an error always makes progress.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "guest/protocol/frame.hpp"

using namespace forkvm::proto;

namespace {

void check(bool condition) {
    if (!condition) std::abort();
}

struct Outcome {
    std::vector<Frame> frames;
    ProtoError error = ProtoError::none;
};

// Feeds `stream` in chunks whose sizes come from a small PRNG seeded by `seed`.
Outcome decode_chunked(ByteSpan stream, std::uint32_t max_payload, std::uint32_t seed) {
    FrameDecoder dec(max_payload);
    Outcome out;
    std::uint32_t state = seed * 2654435761U + 1U;
    std::size_t at = 0;
    while (at < stream.size() && !dec.failed()) {
        state = state * 1103515245U + 12345U;
        const std::size_t len = std::min<std::size_t>(1 + ((state >> 16U) % 64U), stream.size() - at);
        ByteSpan chunk = stream.subspan(at, len);
        at += len;
        while (!chunk.empty() && !dec.failed()) {
            const std::size_t used = dec.feed(chunk);
            check(used <= chunk.size());
            chunk = chunk.subspan(used);
            check(dec.allocated_bytes() <= kHeaderSize + dec.max_payload());
            if (auto frame = dec.take_frame()) {
                out.frames.push_back(std::move(*frame));
            } else {
                check(used > 0 || dec.failed());  // no stall
            }
        }
    }
    out.error = dec.error();
    return out;
}

// Guest-style decoding: resync after every error. Must terminate and yield
// only well-formed frames.
void decode_with_resync(ByteSpan stream, std::uint32_t max_payload) {
    FrameDecoder dec(max_payload);
    std::size_t steps = 0;
    const std::size_t max_steps = 2 * stream.size() + 2;  // every step uses a byte or yields a frame
    while (!stream.empty()) {
        check(++steps <= max_steps);
        stream = stream.subspan(dec.feed(stream));
        check(dec.allocated_bytes() <= kHeaderSize + dec.max_payload());
        if (auto frame = dec.take_frame()) {
            check(is_known_message_type(static_cast<std::uint8_t>(frame->type)));
            check(frame->payload.size() <= dec.max_payload());
        }
        if (dec.failed()) dec.resync();
    }
}

void check_frames(const Outcome& o, std::uint32_t max_payload) {
    for (const Frame& f : o.frames) {
        check(is_known_message_type(static_cast<std::uint8_t>(f.type)));
        check(f.payload.size() <= max_payload);
        Result<Bytes> again = encode_frame(f.type, f.request_id, f.payload);
        check(again.ok());
        FrameDecoder d;
        check(d.feed(again.value()) == again->size());
        auto back = d.take_frame();
        check(back.has_value() && *back == f);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::uint8_t mode = data[0] & 1U;
    // max_payload from 1 byte to the cap (and above it, to test the clamp).
    const std::uint32_t max_payload = (data[0] >> 1U) >= 21 ? 0xFFFFFFFFU : 1U << (data[0] >> 1U);
    const std::uint32_t seed = data[1];
    const ByteSpan rest(data + 2, size - 2);
    const std::uint32_t effective_max = std::min(max_payload, kMaxPayload);

    if (mode == 0) {
        const Outcome chunked = decode_chunked(rest, max_payload, seed);
        const Outcome whole = decode_chunked(rest, max_payload, seed + 1);
        check(chunked.frames == whole.frames);
        check(chunked.error == whole.error);
        check_frames(chunked, effective_max);
        decode_with_resync(rest, max_payload);
        return 0;
    }

    // mode 1: build valid frames from the description, maybe corrupt one byte.
    std::vector<Frame> sent;
    Bytes stream;
    std::size_t i = 0;
    while (i + 2 <= rest.size()) {
        const std::uint8_t type = static_cast<std::uint8_t>(1 + rest[i] % kLastMessageType);
        const std::size_t len = std::min<std::size_t>(rest[i + 1], rest.size() - i - 2);
        Frame f{static_cast<MessageType>(type), static_cast<std::uint32_t>(i),
                Bytes(rest.begin() + static_cast<std::ptrdiff_t>(i + 2),
                      rest.begin() + static_cast<std::ptrdiff_t>(i + 2 + len))};
        check(append_frame(stream, f.type, f.request_id, f.payload) == ProtoError::none);
        sent.push_back(std::move(f));
        i += 2 + len;
    }
    const bool corrupt = (seed & 0x80U) != 0 && !stream.empty();
    if (corrupt) stream[(seed * 7919U) % stream.size()] ^= static_cast<std::uint8_t>(1U + (seed & 0x7FU));

    const Outcome o = decode_chunked(stream, max_payload, seed);
    check_frames(o, effective_max);
    bool all_fit = true;
    for (const Frame& f : sent) all_fit = all_fit && f.payload.size() <= effective_max;
    // Whatever comes out is exactly what went in, in order.
    check(o.frames.size() <= sent.size());
    for (std::size_t k = 0; k < o.frames.size(); ++k) check(o.frames[k] == sent[k]);
    if (corrupt) {
        // The damaged frame is never yielded (CRC-32 catches any change of
        // up to 32 bits); the decoder fails or waits for bytes that never come.
        check(o.frames.size() < sent.size());
    } else if (all_fit) {
        check(o.error == ProtoError::none);
        check(o.frames.size() == sent.size());
    } else {
        check(o.error == ProtoError::payload_too_large);
    }
    decode_with_resync(stream, max_payload);
    return 0;
}
