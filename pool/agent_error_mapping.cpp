#include "pool/agent_error_mapping.hpp"

namespace forkvm::pool {

namespace {

// "'/a/b': no such file" when the call was about a path, else the agent's text.
std::string describe(const vmm::AgentError& error, const AgentCallContext& context) {
    if (context.path.empty()) return error.message();
    return "'" + context.path + "': " + error.message();
}

}  // namespace

bool is_channel_lost(vmm::AgentErrorCode code) noexcept {
    return code == vmm::AgentErrorCode::broken || code == vmm::AgentErrorCode::closed;
}

ServiceError to_service_error(const vmm::AgentError& error, const AgentCallContext& context) {
    using C = vmm::AgentErrorCode;
    const std::string text = describe(error, context);
    switch (error.code()) {
        case C::not_found:
            return ServiceError(ErrorCode::not_found,
                                context.path.empty() ? text : "no such file or directory " + text);
        case C::permission_denied: return ServiceError(ErrorCode::forbidden, "permission denied: " + text);
        case C::already_exists: return ServiceError(ErrorCode::conflict, "already exists: " + text);
        case C::not_a_directory: return ServiceError(ErrorCode::conflict, "not a directory: " + text);
        case C::is_a_directory: return ServiceError(ErrorCode::conflict, "is a directory: " + text);
        case C::not_empty: return ServiceError(ErrorCode::conflict, "directory not empty: " + text);
        case C::invalid_argument:
        case C::unsupported: return ServiceError(ErrorCode::invalid_argument, text, context.field);
        case C::too_large: return ServiceError(ErrorCode::payload_too_large, text, context.field);
        case C::timeout: return ServiceError(ErrorCode::timeout, "the guest agent did not answer in time");
        case C::busy: return ServiceError(ErrorCode::conflict, "sandbox busy: " + text);
        case C::cancelled: return ServiceError(ErrorCode::unavailable, "the call was cancelled");
        case C::broken: return ServiceError(ErrorCode::vm_broken, "the VM's agent channel broke: " + text);
        case C::closed: return ServiceError(ErrorCode::vm_broken, "the VM stopped");
        case C::io:
        case C::internal:
        case C::protocol: break;
    }
    return ServiceError(ErrorCode::guest_error, "the guest agent failed: " + text);
}

}  // namespace forkvm::pool
