#pragma once
// MessageType: the u8 `type` field of a frame. Values are contiguous from 1
// to kLastMessageType so the frame layer can reject anything outside the
// range without knowing each message. Never renumber: append new types.

#include <cstdint>
#include <string_view>

namespace forkvm::proto {

enum class MessageType : std::uint8_t {
    ready = 1,              // agent -> host, request_id 0, once at start-up
    ping = 2,               // host -> agent
    pong = 3,               // agent -> host
    exec_start = 4,         // host -> agent
    exec_started = 5,       // agent -> host
    exec_output = 6,        // agent -> host
    exec_exit = 7,          // agent -> host
    credit = 8,             // both directions
    cancel = 9,             // host -> agent
    read_file = 10,         // host -> agent
    file_data = 11,         // both directions
    file_end = 12,          // agent -> host
    write_file_begin = 13,  // host -> agent
    write_file_end = 14,    // host -> agent
    ok = 15,                // agent -> host
    stat = 16,              // host -> agent
    stat_result = 17,       // agent -> host
    list_dir = 18,          // host -> agent
    dir_entries = 19,       // agent -> host
    exists = 20,            // host -> agent
    bool_result = 21,       // agent -> host
    remove = 22,            // host -> agent
    rename = 23,            // host -> agent
    mkdir = 24,             // host -> agent
    error = 25,             // agent -> host (terminal reply of a failed request)
    proxy_open = 26,        // agent -> host: a client connected to the egress proxy
    proxy_data = 27,        // both directions
    proxy_credit = 28,      // both directions
    proxy_close = 29,       // both directions
};

inline constexpr std::uint8_t kFirstMessageType = 1;
inline constexpr std::uint8_t kLastMessageType = 29;

[[nodiscard]] constexpr bool is_known_message_type(std::uint8_t raw) noexcept {
    return raw >= kFirstMessageType && raw <= kLastMessageType;
}

// Stable lower-case name for logs ("exec_start"); "unknown" outside the range.
[[nodiscard]] std::string_view message_type_name(MessageType type) noexcept;

}  // namespace forkvm::proto
