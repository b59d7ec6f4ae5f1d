#pragma once
// ErrorCode: the `code` of an Error reply, errno-independent so the host can
// map it to an API error without knowing the guest's libc. The raw errno
// travels next to it for logs.

#include <cstdint>
#include <string_view>

namespace forkvm::proto {

enum class ErrorCode : std::uint8_t {
    not_found = 1,
    permission_denied = 2,
    already_exists = 3,
    not_a_directory = 4,
    is_a_directory = 5,
    not_empty = 6,
    invalid_argument = 7,
    io = 8,
    too_large = 9,
    cancelled = 10,
    busy = 11,
    unsupported = 12,
    internal = 13,
    protocol = 14,  // the request itself was malformed or out of sequence
};

inline constexpr std::uint8_t kFirstErrorCode = 1;
inline constexpr std::uint8_t kLastErrorCode = 14;

[[nodiscard]] constexpr bool is_known_error_code(std::uint8_t raw) noexcept {
    return raw >= kFirstErrorCode && raw <= kLastErrorCode;
}

// Maps a Linux errno from a failed system call to the code; anything not
// listed is `io` (a failed file operation the caller cannot fix by changing
// the request).
[[nodiscard]] ErrorCode error_code_from_errno(int err) noexcept;

[[nodiscard]] std::string_view error_code_name(ErrorCode code) noexcept;

}  // namespace forkvm::proto
