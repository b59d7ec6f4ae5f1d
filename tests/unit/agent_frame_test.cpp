// Frame layer of the agent protocol: encoding, incremental decoding, every
// error kind, the memory bound and resync.

#include <cstdint>
#include <doctest/doctest.h>
#include <string_view>
#include <vector>

#include "guest/protocol/crc32.hpp"
#include "guest/protocol/frame.hpp"

using namespace forkvm::proto;

namespace {

Bytes to_bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

Bytes frame_of(MessageType type, std::uint32_t id, const Bytes& payload) {
    Result<Bytes> f = encode_frame(type, id, payload);
    REQUIRE(f.ok());
    return f.value();
}

// Feeds everything; collects frames; returns the stopping error.
ProtoError decode_all(FrameDecoder& dec, const Bytes& data, std::vector<Frame>& frames) {
    return dec.feed_all(data, [&](Frame&& f) { frames.push_back(std::move(f)); });
}

void put_u32(Bytes& b, std::size_t at, std::uint32_t v) {
    for (std::size_t i = 0; i < 4; ++i) b[at + i] = static_cast<std::uint8_t>(v >> (8 * i));
}

// Rewrites the CRC after a header edit, so the test reaches the check it aims at.
void fix_crc(Bytes& frame) {
    const std::uint32_t crc = crc32_update(crc32(ByteSpan(frame.data(), 16)),
                                           ByteSpan(frame.data() + kHeaderSize, frame.size() - kHeaderSize));
    put_u32(frame, 16, crc);
}

}  // namespace

TEST_CASE("agent_protocol: crc32 matches zlib's check values") {
    CHECK(crc32(to_bytes("")) == 0U);
    CHECK(crc32(to_bytes("123456789")) == 0xCBF43926U);
    CHECK(crc32(to_bytes("The quick brown fox jumps over the lazy dog")) == 0x414FA339U);
    // Incremental equals one shot.
    CHECK(crc32_update(crc32(to_bytes("12345")), to_bytes("6789")) == 0xCBF43926U);
}

TEST_CASE("agent_protocol: frame header layout is little-endian FKVM") {
    const Bytes f = frame_of(MessageType::ping, 0x01020304U, to_bytes("abc"));
    REQUIRE(f.size() == kHeaderSize + 3);
    CHECK(f[0] == 'F');
    CHECK(f[1] == 'K');
    CHECK(f[2] == 'V');
    CHECK(f[3] == 'M');
    CHECK(f[4] == 1);
    CHECK(f[5] == static_cast<std::uint8_t>(MessageType::ping));
    CHECK(f[6] == 0);
    CHECK(f[7] == 0);
    CHECK(f[8] == 0x04);
    CHECK(f[11] == 0x01);
    CHECK(f[12] == 3);
    CHECK(f[13] == 0);
    Bytes covered(f.begin(), f.begin() + 16);
    covered.insert(covered.end(), f.begin() + 20, f.end());
    const std::uint32_t crc = crc32(covered);
    CHECK(f[16] == static_cast<std::uint8_t>(crc));
    CHECK(f[19] == static_cast<std::uint8_t>(crc >> 24));
}

TEST_CASE("agent_protocol: frame round trip, whole and byte by byte") {
    Bytes payload;
    for (int i = 0; i < 256; ++i) payload.push_back(static_cast<std::uint8_t>(i));
    const Bytes f = frame_of(MessageType::file_data, 42, payload);

    FrameDecoder whole;
    CHECK(whole.feed(f) == f.size());
    auto got = whole.take_frame();
    REQUIRE(got.has_value());
    CHECK(got->type == MessageType::file_data);
    CHECK(got->request_id == 42U);
    CHECK(got->payload == payload);
    CHECK_FALSE(whole.take_frame().has_value());

    FrameDecoder dec;
    std::vector<Frame> frames;
    for (std::uint8_t b : f) {
        CHECK(frames.empty());
        CHECK(decode_all(dec, Bytes{b}, frames) == ProtoError::none);
    }
    REQUIRE(frames.size() == 1);
    CHECK(frames[0] == Frame{MessageType::file_data, 42, payload});
}

TEST_CASE("agent_protocol: two frames and an empty payload in one chunk") {
    Bytes stream = frame_of(MessageType::ping, 1, to_bytes("12345678"));
    const Bytes second = frame_of(MessageType::ok, 2, {});
    stream.insert(stream.end(), second.begin(), second.end());
    const Bytes third_part = frame_of(MessageType::cancel, 3, {});
    stream.insert(stream.end(), third_part.begin(), third_part.begin() + 7);  // partial third

    FrameDecoder dec;
    // The pull API stops after each frame and waits for it to be taken.
    const std::size_t used = dec.feed(stream);
    CHECK(used == kHeaderSize + 8);
    CHECK(dec.feed(ByteSpan(stream).subspan(used)) == 0);  // frame pending
    REQUIRE(dec.take_frame().has_value());

    FrameDecoder dec2;
    std::vector<Frame> frames;
    CHECK(decode_all(dec2, stream, frames) == ProtoError::none);
    REQUIRE(frames.size() == 2);
    CHECK(frames[0].request_id == 1U);
    CHECK(frames[1].type == MessageType::ok);
    CHECK(frames[1].payload.empty());
    CHECK(dec2.buffered_bytes() == 7);
    CHECK(decode_all(dec2, Bytes(third_part.begin() + 7, third_part.end()), frames) == ProtoError::none);
    REQUIRE(frames.size() == 3);
    CHECK(frames[2].type == MessageType::cancel);
}

TEST_CASE("agent_protocol: a flipped payload byte is a CRC error, and the decoder stays failed") {
    Bytes f = frame_of(MessageType::file_data, 7, to_bytes("hello world"));
    f[kHeaderSize + 3] ^= 0x01U;
    FrameDecoder dec;
    std::vector<Frame> frames;
    CHECK(decode_all(dec, f, frames) == ProtoError::crc_mismatch);
    CHECK(frames.empty());
    CHECK(dec.failed());
    // Sticky: a valid frame afterwards is not accepted.
    const Bytes good = frame_of(MessageType::ping, 8, Bytes(8, 0));
    CHECK(dec.feed(good) == 0);
    CHECK(dec.error() == ProtoError::crc_mismatch);
    // reset() starts afresh.
    dec.reset();
    CHECK(decode_all(dec, good, frames) == ProtoError::none);
    CHECK(frames.size() == 1);

    Bytes hdr = frame_of(MessageType::ping, 9, Bytes(8, 0));
    hdr[8] ^= 0x80U;  // request id corrupted: covered by the CRC too
    FrameDecoder dec2;
    CHECK(decode_all(dec2, hdr, frames) == ProtoError::crc_mismatch);
}

TEST_CASE("agent_protocol: header errors are typed") {
    FrameDecoder dec;
    std::vector<Frame> frames;

    SUBCASE("wrong magic is rejected at the first bad byte") {
        CHECK(dec.feed(to_bytes("FKX")) == 3);
        CHECK(dec.error() == ProtoError::bad_magic);
    }
    SUBCASE("version 2") {
        Bytes f = frame_of(MessageType::ping, 1, Bytes(8, 0));
        f[4] = 2;
        fix_crc(f);
        CHECK(decode_all(dec, f, frames) == ProtoError::unsupported_version);
    }
    SUBCASE("nonzero flags") {
        Bytes f = frame_of(MessageType::ping, 1, Bytes(8, 0));
        f[7] = 0x80;
        fix_crc(f);
        CHECK(decode_all(dec, f, frames) == ProtoError::nonzero_flags);
    }
    SUBCASE("type outside the known range") {
        for (std::uint8_t t : {std::uint8_t{0}, std::uint8_t{kLastMessageType + 1}, std::uint8_t{255}}) {
            FrameDecoder d;
            Bytes f = frame_of(MessageType::ok, 1, {});
            f[5] = t;
            fix_crc(f);
            CHECK(decode_all(d, f, frames) == ProtoError::unknown_type);
        }
        CHECK(frames.empty());
    }
    SUBCASE("encoding an oversized payload fails and leaves the buffer alone") {
        Bytes out = to_bytes("x");
        CHECK(append_frame(out, MessageType::file_data, 1, Bytes(kMaxPayload + 1, 0)) ==
              ProtoError::payload_too_large);
        CHECK(out == to_bytes("x"));
        CHECK(encode_frame(MessageType::file_data, 1, Bytes(kMaxPayload, 0)).ok());
    }
}

TEST_CASE("agent_protocol: oversized declared length is rejected before the payload arrives") {
    FrameDecoder dec(4096);
    CHECK(dec.max_payload() == 4096U);
    Bytes f = frame_of(MessageType::file_data, 1, Bytes(4097, 0xAB));
    // Only the 20 header bytes are fed: the error must already be there.
    CHECK(dec.feed(ByteSpan(f).first(kHeaderSize)) == kHeaderSize);
    CHECK(dec.error() == ProtoError::payload_too_large);
    CHECK(dec.allocated_bytes() <= kHeaderSize);

    // Exactly max_payload is fine.
    FrameDecoder ok(4096);
    std::vector<Frame> frames;
    CHECK(decode_all(ok, frame_of(MessageType::file_data, 1, Bytes(4096, 1)), frames) == ProtoError::none);
    CHECK(frames.size() == 1);

    // A configured max above the hard cap is clamped to it.
    FrameDecoder big(0xFFFFFFFFU);
    CHECK(big.max_payload() == kMaxPayload);
    Bytes hdr = frame_of(MessageType::file_data, 1, {});
    put_u32(hdr, 12, 0xFFFFFFFFU);
    fix_crc(hdr);
    CHECK(big.feed(hdr) == kHeaderSize);
    CHECK(big.error() == ProtoError::payload_too_large);
}

TEST_CASE("agent_protocol: decoder memory stays bounded by header + max_payload") {
    const std::uint32_t max = 1000;
    FrameDecoder dec(max);
    std::size_t frames_seen = 0;
    std::size_t peak = 0;
    for (int i = 0; i < 200; ++i) {
        const Bytes f = frame_of(MessageType::file_data, static_cast<std::uint32_t>(i),
                                 Bytes(static_cast<std::size_t>(i * 5) % (max + 1), 0x5A));
        // Feed in uneven slices; check the bound after every slice.
        for (std::size_t at = 0; at < f.size();) {
            const std::size_t len = std::min<std::size_t>(37, f.size() - at);
            ByteSpan chunk = ByteSpan(f).subspan(at, len);
            while (!chunk.empty()) {
                chunk = chunk.subspan(dec.feed(chunk));
                peak = std::max(peak, dec.allocated_bytes());
                if (dec.take_frame()) ++frames_seen;
                REQUIRE_FALSE(dec.failed());
            }
            at += len;
        }
    }
    CHECK(frames_seen == 200);
    CHECK(peak <= kHeaderSize + max);
}

TEST_CASE("agent_protocol: find_magic and resync skip line noise") {
    CHECK(find_magic(to_bytes("xxFKVMyy")) == 2);
    CHECK(find_magic(to_bytes("xxxFK")) == 3);  // a split magic is kept
    CHECK(find_magic(to_bytes("FKxVM")) == 5);
    CHECK(find_magic({}) == 0);

    // Noise, including a fake partial magic, before two good frames.
    Bytes stream = to_bytes("\r\n[ 0.1] FKV garbage F");
    const Bytes f1 = frame_of(MessageType::ping, 5, Bytes(8, 1));
    const Bytes f2 = frame_of(MessageType::ok, 6, {});
    stream.insert(stream.end(), f1.begin(), f1.end());
    stream.insert(stream.end(), f2.begin(), f2.end());

    for (std::size_t chunk : {std::size_t{1}, std::size_t{3}, stream.size()}) {
        FrameDecoder dec;
        std::vector<Frame> frames;
        std::size_t errors = 0;
        for (std::size_t at = 0; at < stream.size(); at += chunk) {
            ByteSpan in = ByteSpan(stream).subspan(at, std::min(chunk, stream.size() - at));
            while (!in.empty()) {
                in = in.subspan(dec.feed(in));
                if (auto f = dec.take_frame()) frames.push_back(std::move(*f));
                if (dec.failed()) {
                    ++errors;
                    dec.resync();
                }
            }
        }
        CHECK(errors > 0);
        REQUIRE(frames.size() == 2);
        CHECK(frames[0].request_id == 5U);
        CHECK(frames[1].request_id == 6U);
    }
}

TEST_CASE("agent_protocol: resync finds a frame that starts inside a bad header") {
    // "FKVM" + bad version byte, and the real frame begins 5 bytes in.
    Bytes stream = to_bytes("FKVM");
    stream.push_back(9);
    const Bytes good = frame_of(MessageType::pong, 77, Bytes(16, 2));
    stream.insert(stream.end(), good.begin(), good.begin() + 15);  // header fills with part of good

    FrameDecoder dec;
    ByteSpan in(stream);
    in = in.subspan(dec.feed(in));
    CHECK(dec.error() == ProtoError::unsupported_version);
    CHECK(dec.resync() == 5);  // "FKVM\x09" dropped, good's 15 bytes kept
    CHECK(dec.buffered_bytes() == 15);
    std::vector<Frame> frames;
    CHECK(decode_all(dec, Bytes(good.begin() + 15, good.end()), frames) == ProtoError::none);
    REQUIRE(frames.size() == 1);
    CHECK(frames[0].request_id == 77U);
}
