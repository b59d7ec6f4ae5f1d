#include "guest/protocol/result.hpp"

namespace forkvm::proto {

std::string_view proto_error_name(ProtoError error) noexcept {
    switch (error) {
        case ProtoError::none: return "none";
        case ProtoError::bad_magic: return "bad_magic";
        case ProtoError::unsupported_version: return "unsupported_version";
        case ProtoError::nonzero_flags: return "nonzero_flags";
        case ProtoError::payload_too_large: return "payload_too_large";
        case ProtoError::crc_mismatch: return "crc_mismatch";
        case ProtoError::unknown_type: return "unknown_type";
        case ProtoError::truncated: return "truncated";
        case ProtoError::length_too_large: return "length_too_large";
        case ProtoError::trailing_bytes: return "trailing_bytes";
        case ProtoError::invalid_value: return "invalid_value";
        case ProtoError::wrong_type: return "wrong_type";
    }
    return "unknown";
}

}  // namespace forkvm::proto
