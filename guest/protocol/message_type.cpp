#include "guest/protocol/message_type.hpp"

#include <array>

namespace forkvm::proto {

std::string_view message_type_name(MessageType type) noexcept {
    static constexpr std::array<std::string_view, kLastMessageType + 1> kNames = {
        "unknown",        "ready",
        "ping",           "pong",
        "exec_start",     "exec_started",
        "exec_output",    "exec_exit",
        "credit",         "cancel",
        "read_file",      "file_data",
        "file_end",       "write_file_begin",
        "write_file_end", "ok",
        "stat",           "stat_result",
        "list_dir",       "dir_entries",
        "exists",         "bool_result",
        "remove",         "rename",
        "mkdir",          "error",
        "proxy_open",     "proxy_data",
        "proxy_credit",   "proxy_close",
    };
    const auto raw = static_cast<std::uint8_t>(type);
    return is_known_message_type(raw) ? kNames[raw] : kNames[0];
}

}  // namespace forkvm::proto
