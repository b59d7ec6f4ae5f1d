// Message layer of the agent protocol: Reader/Writer bounds checks and the
// round trip of every message, with binary-unsafe bytes everywhere.

#include <cerrno>
#include <cstdint>
#include <doctest/doctest.h>
#include <string>
#include <vector>

#include "guest/protocol/messages.hpp"

using namespace forkvm::proto;

namespace {

std::string all_bytes() {
    std::string s;
    for (int i = 0; i < 256; ++i) s.push_back(static_cast<char>(i));
    return s;
}

Bytes all_bytes_vec() {
    const std::string s = all_bytes();
    return Bytes(s.begin(), s.end());
}

// Encodes m, checks the frame decodes back to an equal message through both
// the typed and the variant path, and that every strict prefix is rejected.
template <class M>
void check_round_trip(const M& m) {
    CAPTURE(message_type_name(M::kType));
    Result<Bytes> wire = encode_message(1234, m);
    REQUIRE(wire.ok());
    FrameDecoder dec;
    REQUIRE(dec.feed(wire.value()) == wire->size());
    auto frame = dec.take_frame();
    REQUIRE(frame.has_value());
    CHECK(frame->type == M::kType);
    CHECK(frame->request_id == 1234U);

    Result<M> typed = decode_message<M>(*frame);
    REQUIRE(typed.ok());
    CHECK(typed.value() == m);

    Result<Message> any = decode_any(*frame);
    REQUIRE(any.ok());
    CHECK(message_type(any.value()) == M::kType);
    CHECK(std::get<M>(any.value()) == m);
    CHECK(encode_payload(any.value()) == frame->payload);

    // Truncation anywhere is an error, never a crash; trailing bytes too.
    for (std::size_t n = 0; n < frame->payload.size(); ++n) {
        Result<M> cut = decode_message<M>(ByteSpan(frame->payload).first(n));
        CHECK_FALSE(cut.ok());
    }
    Bytes longer = frame->payload;
    longer.push_back(0);
    CHECK(decode_message<M>(ByteSpan(longer)).error() == ProtoError::trailing_bytes);
}

}  // namespace

TEST_CASE("agent_protocol: Reader reads little-endian and rejects truncated input") {
    const Bytes data = {0x01, 0x02, 0x03, 0x04, 0x05};
    Reader r(data);
    CHECK(r.u16() == 0x0201U);
    CHECK(r.u8() == 0x03U);
    CHECK(r.ok());
    CHECK(r.u32() == 0U);  // only 2 bytes left
    CHECK(r.error() == ProtoError::truncated);
    CHECK(r.u8() == 0U);  // sticky: nothing more is read
    CHECK(r.finish() == ProtoError::truncated);

    Bytes out;
    Writer w(out);
    w.i32(-2);
    w.i64(-3);
    w.u64(0x1122334455667788ULL);
    Reader r2(out);
    CHECK(r2.i32() == -2);
    CHECK(r2.i64() == -3);
    CHECK(r2.u64() == 0x1122334455667788ULL);
    CHECK(r2.finish() == ProtoError::none);
}

TEST_CASE("agent_protocol: Reader rejects hostile lengths and counts without allocating") {
    SUBCASE("bytes length larger than the rest") {
        const Bytes data = {0xFF, 0xFF, 0xFF, 0xFF, 'a', 'b'};
        Reader r(data);
        CHECK(r.bytes().empty());
        CHECK(r.error() == ProtoError::length_too_large);
    }
    SUBCASE("list count that cannot fit") {
        // 1000 items declared, but each needs >= 4 bytes and only 8 remain.
        Bytes data = {0xE8, 0x03, 0x00, 0x00};
        data.resize(12, 0);
        Reader r(data);
        CHECK(r.string_list().empty());
        CHECK(r.error() == ProtoError::length_too_large);
    }
    SUBCASE("a 4-billion-entry directory listing") {
        const Bytes data = {0xFF, 0xFF, 0xFF, 0xFF, 0};
        CHECK(decode_message<DirEntries>(ByteSpan(data)).error() == ProtoError::length_too_large);
    }
    SUBCASE("a count that fits exactly is fine") {
        const Bytes data = {2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 'x'};
        Reader r(data);
        const auto list = r.string_list();
        CHECK(r.finish() == ProtoError::none);
        CHECK(list == std::vector<std::string>{"", "x"});
    }
}

TEST_CASE("agent_protocol: finish rejects trailing bytes, bools must be 0 or 1") {
    const Bytes data = {1, 0};
    Reader r(data);
    CHECK(r.boolean());
    CHECK(r.finish() == ProtoError::trailing_bytes);

    CHECK(decode_message<Bool>(Bytes{2}).error() == ProtoError::invalid_value);
    CHECK(decode_message<Bool>(Bytes{1}).value().value);
    CHECK(decode_message<Bool>(Bytes{}).error() == ProtoError::truncated);
}

TEST_CASE("agent_protocol: enum fields out of range are invalid") {
    CHECK(decode_message<Credit>(Bytes{3, 0, 0, 0, 0}).error() == ProtoError::invalid_value);
    CHECK(decode_message<Credit>(Bytes{2, 1, 0, 0, 0}).value().bytes == 1U);
    // ExecOutput carries stdout or stderr, never the file data stream.
    CHECK(decode_message<ExecOutput>(Bytes{0, 0, 0, 0, 0}).error() == ProtoError::invalid_value);
    Bytes stat = encode_payload(StatResult{});
    stat[0] = 0;
    CHECK(decode_message<StatResult>(ByteSpan(stat)).error() == ProtoError::invalid_value);
    Bytes err = encode_payload(Error{});
    err[0] = 15;
    CHECK(decode_message<Error>(ByteSpan(err)).error() == ProtoError::invalid_value);
    Bytes wfb = encode_payload(WriteFileBegin{});
    wfb[4 + 4 + 1] = 2;  // path "", mode, create_parents, then write_mode
    CHECK(decode_message<WriteFileBegin>(ByteSpan(wfb)).error() == ProtoError::invalid_value);
}

TEST_CASE("agent_protocol: decode_message checks the frame type, decode_any the range") {
    const Frame f{MessageType::ping, 1, encode_payload(Ping{7})};
    CHECK(decode_message<Pong>(f).error() == ProtoError::wrong_type);
    CHECK(decode_message<Ping>(f).value().nonce == 7U);
    CHECK(decode_any(static_cast<MessageType>(0), {}).error() == ProtoError::unknown_type);
    CHECK(decode_any(static_cast<MessageType>(kLastMessageType + 1), {}).error() == ProtoError::unknown_type);
}

TEST_CASE("agent_protocol: every message round-trips, binary bytes included") {
    const std::string bin = all_bytes();
    const Bytes binv = all_bytes_vec();
    check_round_trip(Ready{1, std::string("forkvm-agent 0.1\0x", 18), kCapExec | kCapFiles | kCapCredit});
    check_round_trip(Ping{0xFFFFFFFFFFFFFFFFULL});
    check_round_trip(Pong{42, 123456789012345ULL});
    check_round_trip(ExecStart{{"/bin/sh", "-c", bin, ""},
                               {"PATH=/usr/bin", "BIN=" + bin},
                               "/tmp/" + bin,
                               "root",
                               30000,
                               binv,
                               1U << 20U,
                               ~0ULL,
                               65536});
    check_round_trip(ExecStart{});
    check_round_trip(ExecStarted{4242});
    check_round_trip(ExecOutput{StreamId::exec_stderr, binv});
    check_round_trip(ExecExit{-1, 9, true, false, true, 1500000});
    check_round_trip(ExecExit{0, 0, false, true, false, 0});
    check_round_trip(Credit{StreamId::exec_stdout, 0xFFFFFFFFU});
    check_round_trip(Cancel{});
    check_round_trip(ReadFile{bin, 10, 1U << 30U, 32768});
    check_round_trip(FileData{binv});
    check_round_trip(FileData{});
    check_round_trip(FileEnd{12345, true});
    check_round_trip(WriteFileBegin{"/root/" + bin, 0600, true, WriteMode::append, 999});
    check_round_trip(WriteFileEnd{});
    check_round_trip(Ok{});
    check_round_trip(Stat{bin, false});
    check_round_trip(StatResult{FileType::symlink, 0777, 1ULL << 40U, -1234567890123LL, 1000, 1001});
    check_round_trip(ListDir{"/", 500});
    check_round_trip(DirEntries{
        {{"a", FileType::file, 3, 0644}, {bin, FileType::directory, 4096, 0755}, {"", FileType::other, 0, 0}},
        true});
    check_round_trip(DirEntries{});
    check_round_trip(Exists{bin});
    check_round_trip(Bool{true});
    check_round_trip(Remove{"/tmp/x", true});
    check_round_trip(Rename{bin, "/tmp/y"});
    check_round_trip(Mkdir{"/a/b/c", 0700, true});
    check_round_trip(Error{ErrorCode::not_empty, ENOTEMPTY, "rmdir /x: " + bin});
}

TEST_CASE("agent_protocol: message encoding appends in place and respects the payload cap") {
    Bytes out = {'p', 'r', 'e'};
    CHECK(append_message(out, 5, Ping{1}) == ProtoError::none);
    CHECK(append_message(out, 6, Message{Pong{1, 2}}) == ProtoError::none);
    CHECK(out.size() == 3 + (kHeaderSize + 8) + (kHeaderSize + 16));

    // A FileData just over the cap (4 bytes of length prefix) is refused.
    FileData big{Bytes(kMaxPayload - 3, 0)};
    CHECK(append_message(out, 7, big) == ProtoError::payload_too_large);
    CHECK(out.size() == 3 + (kHeaderSize + 8) + (kHeaderSize + 16));
    big.data.pop_back();
    CHECK(encode_message(7, big).ok());

    FrameEncoder enc;
    CHECK(enc.add(1, Ping{9}) == ProtoError::none);
    CHECK(enc.add_frame(MessageType::ok, 2, {}) == ProtoError::none);
    const std::size_t total = enc.pending().size();
    CHECK(total == 2 * kHeaderSize + 8);
    enc.consume(10);  // a short write
    CHECK(enc.pending().size() == total - 10);
    enc.consume(total);
    CHECK(enc.empty());
}

TEST_CASE("agent_protocol: several requests interleave on one channel by request id") {
    FrameEncoder enc;
    CHECK(enc.add(1, ExecOutput{StreamId::exec_stdout, Bytes{'a'}}) == ProtoError::none);
    CHECK(enc.add(2, Pong{5, 6}) == ProtoError::none);
    CHECK(enc.add(1, ExecExit{0, 0, false, false, false, 10}) == ProtoError::none);
    FrameDecoder dec;
    std::vector<std::pair<std::uint32_t, MessageType>> seen;
    CHECK(dec.feed_all(enc.pending(), [&](Frame&& f) { seen.emplace_back(f.request_id, f.type); }) ==
          ProtoError::none);
    CHECK(seen == std::vector<std::pair<std::uint32_t, MessageType>>{
                      {1, MessageType::exec_output}, {2, MessageType::pong}, {1, MessageType::exec_exit}});
}

TEST_CASE("agent_protocol: errno maps to error codes, names are stable") {
    CHECK(error_code_from_errno(ENOENT) == ErrorCode::not_found);
    CHECK(error_code_from_errno(EACCES) == ErrorCode::permission_denied);
    CHECK(error_code_from_errno(EPERM) == ErrorCode::permission_denied);
    CHECK(error_code_from_errno(EEXIST) == ErrorCode::already_exists);
    CHECK(error_code_from_errno(ENOTDIR) == ErrorCode::not_a_directory);
    CHECK(error_code_from_errno(EISDIR) == ErrorCode::is_a_directory);
    CHECK(error_code_from_errno(ENOTEMPTY) == ErrorCode::not_empty);
    CHECK(error_code_from_errno(EINVAL) == ErrorCode::invalid_argument);
    CHECK(error_code_from_errno(EFBIG) == ErrorCode::too_large);
    CHECK(error_code_from_errno(ECANCELED) == ErrorCode::cancelled);
    CHECK(error_code_from_errno(EBUSY) == ErrorCode::busy);
    CHECK(error_code_from_errno(ENOSYS) == ErrorCode::unsupported);
    CHECK(error_code_from_errno(EIO) == ErrorCode::io);
    CHECK(error_code_from_errno(0x7FFF) == ErrorCode::io);
    CHECK(error_code_name(ErrorCode::not_a_directory) == "not_a_directory");
    CHECK(message_type_name(MessageType::exec_start) == "exec_start");
    CHECK(message_type_name(MessageType::error) == "error");
    CHECK(message_type_name(static_cast<MessageType>(200)) == "unknown");
    CHECK(proto_error_name(ProtoError::crc_mismatch) == "crc_mismatch");
    for (std::uint8_t t = kFirstMessageType; t <= kLastMessageType; ++t)
        CHECK(message_type_name(static_cast<MessageType>(t)) != "unknown");
}
