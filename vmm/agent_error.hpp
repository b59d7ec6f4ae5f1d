#pragma once
// AgentError: the one error type of the host side of the agent channel.
// Its code is either what the agent answered (every proto::ErrorCode, same
// numbers, with the guest's errno and message) or a transport condition seen
// by the host (timeout, broken, closed, busy). The server layers map codes to
// HTTP in one place; nothing here knows about HTTP.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

#include "guest/protocol/error_code.hpp"

namespace forkvm::vmm {

enum class AgentErrorCode : std::uint8_t {
    // Answered by the agent (an `error` reply): the values of proto::ErrorCode.
    not_found = 1,
    permission_denied = 2,
    already_exists = 3,
    not_a_directory = 4,
    is_a_directory = 5,
    not_empty = 6,
    invalid_argument = 7,  // also: the host refused a request it cannot encode
    io = 8,
    too_large = 9,  // also: a read into memory exceeded max_buffered_bytes
    cancelled = 10,
    busy = 11,  // also: too many requests in flight on this client
    unsupported = 12,
    internal = 13,
    protocol = 14,  // the agent says our request was malformed
    // Seen by the host.
    timeout = 100,  // the deadline passed; the client is now `unhealthy`
    broken = 101,   // the agent violated the protocol; the channel is unusable
    closed = 102,   // the agent closed the channel, or the client was closed
};

[[nodiscard]] std::string_view agent_error_code_name(AgentErrorCode code) noexcept;
[[nodiscard]] AgentErrorCode agent_error_code(proto::ErrorCode code) noexcept;

class AgentError : public std::runtime_error {
public:
    // what() is "<code name>: <message>" plus " (errno N)" when err != 0.
    AgentError(AgentErrorCode code, std::string message, int err = 0);

    [[nodiscard]] AgentErrorCode code() const noexcept { return code_; }
    // The guest's errno for an agent error, 0 if none.
    [[nodiscard]] int err() const noexcept { return err_; }
    [[nodiscard]] const std::string& message() const noexcept { return message_; }

private:
    AgentErrorCode code_;
    int err_;
    std::string message_;
};

}  // namespace forkvm::vmm
