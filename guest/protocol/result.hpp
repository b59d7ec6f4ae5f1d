#pragma once
// ProtoError and Result<T>: the one error style of the protocol library.
// Decoding untrusted bytes never throws and never crashes; every failure is a
// ProtoError value the caller must look at ([[nodiscard]]).

#include <cstdint>
#include <string_view>
#include <utility>
#include <variant>

namespace forkvm::proto {

enum class ProtoError : std::uint8_t {
    none = 0,
    // Frame layer.
    bad_magic,
    unsupported_version,
    nonzero_flags,
    payload_too_large,
    crc_mismatch,
    unknown_type,
    // Message layer.
    truncated,         // a field runs past the end of the payload
    length_too_large,  // a declared length/count cannot fit in the remaining bytes
    trailing_bytes,    // bytes left over after the last field
    invalid_value,     // a bool other than 0/1, an enum out of range
    wrong_type,        // decode_message<M>() called on a frame of another type
};

[[nodiscard]] std::string_view proto_error_name(ProtoError error) noexcept;

// Either a T or a ProtoError (never ProtoError::none).
template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
    Result(ProtoError error) : v_(error) {}    // NOLINT(google-explicit-constructor)

    [[nodiscard]] bool ok() const noexcept { return v_.index() == 0; }
    explicit operator bool() const noexcept { return ok(); }
    [[nodiscard]] ProtoError error() const noexcept { return ok() ? ProtoError::none : std::get<1>(v_); }

    // Precondition: ok().
    [[nodiscard]] T& value() & { return std::get<0>(v_); }
    [[nodiscard]] const T& value() const& { return std::get<0>(v_); }
    [[nodiscard]] T&& value() && { return std::get<0>(std::move(v_)); }
    T* operator->() { return &std::get<0>(v_); }
    const T* operator->() const { return &std::get<0>(v_); }
    T& operator*() & { return std::get<0>(v_); }
    const T& operator*() const& { return std::get<0>(v_); }

private:
    std::variant<T, ProtoError> v_;
};

}  // namespace forkvm::proto
