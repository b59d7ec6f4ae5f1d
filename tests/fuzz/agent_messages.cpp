// Fuzz target: decode any message type from a hostile payload.
// Input byte 0 is the MessageType, the rest the payload. Invariants (abort()
// on violation): decoding never crashes; whatever decodes re-encodes to the
// exact same payload (the encoding is canonical), decodes again to an equal
// message, and survives a trip through the frame layer.

#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "guest/protocol/messages.hpp"

using namespace forkvm::proto;

namespace {

void check(bool condition) {
    if (!condition) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1 || size - 1 > kMaxPayload) return 0;
    const auto type = static_cast<MessageType>(data[0]);
    const ByteSpan payload(data + 1, size - 1);

    Result<Message> decoded = decode_any(type, payload);
    if (!decoded) {
        check(decoded.error() != ProtoError::none);
        if (!is_known_message_type(data[0])) check(decoded.error() == ProtoError::unknown_type);
        return 0;
    }
    check(message_type(decoded.value()) == type);

    const Bytes again = encode_payload(decoded.value());
    check(again.size() == payload.size());
    check(std::equal(again.begin(), again.end(), payload.begin()));

    Result<Message> twice = decode_any(type, again);
    check(twice.ok() && twice.value() == decoded.value());

    Bytes wire;
    check(append_message(wire, 99, decoded.value()) == ProtoError::none);
    FrameDecoder dec;
    check(dec.feed(wire) == wire.size());
    auto frame = dec.take_frame();
    check(frame.has_value() && frame->type == type && frame->request_id == 99U);
    Result<Message> framed = decode_any(*frame);
    check(framed.ok() && framed.value() == decoded.value());
    return 0;
}
