#include "vmm/agent_error.hpp"

#include <fmt/format.h>

namespace forkvm::vmm {

std::string_view agent_error_code_name(AgentErrorCode code) noexcept {
    switch (code) {
        case AgentErrorCode::timeout: return "timeout";
        case AgentErrorCode::broken: return "broken";
        case AgentErrorCode::closed: return "closed";
        default: break;
    }
    const auto raw = static_cast<std::uint8_t>(code);
    if (proto::is_known_error_code(raw)) return proto::error_code_name(static_cast<proto::ErrorCode>(raw));
    return "unknown";
}

AgentErrorCode agent_error_code(proto::ErrorCode code) noexcept {
    // Same numbering by construction (see the enum); the static_asserts keep it.
    return static_cast<AgentErrorCode>(static_cast<std::uint8_t>(code));
}

static_assert(static_cast<int>(AgentErrorCode::not_found) == static_cast<int>(proto::ErrorCode::not_found));
static_assert(static_cast<int>(AgentErrorCode::busy) == static_cast<int>(proto::ErrorCode::busy));
static_assert(static_cast<int>(AgentErrorCode::protocol) == static_cast<int>(proto::ErrorCode::protocol));
static_assert(static_cast<int>(AgentErrorCode::protocol) == proto::kLastErrorCode);

namespace {

std::string describe(AgentErrorCode code, const std::string& message, int err) {
    if (err != 0) return fmt::format("{}: {} (errno {})", agent_error_code_name(code), message, err);
    return fmt::format("{}: {}", agent_error_code_name(code), message);
}

}  // namespace

AgentError::AgentError(AgentErrorCode code, std::string message, int err)
    : std::runtime_error(describe(code, message, err)),
      code_(code),
      err_(err),
      message_(std::move(message)) {}

}  // namespace forkvm::vmm
