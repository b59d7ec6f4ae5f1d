#include "pool/service_error.hpp"

#include <utility>

namespace forkvm::pool {

std::string_view to_string(ErrorCode code) noexcept {
    switch (code) {
        case ErrorCode::invalid_argument: return "invalid_argument";
        case ErrorCode::unauthorized: return "unauthorized";
        case ErrorCode::forbidden: return "forbidden";
        case ErrorCode::not_found: return "not_found";
        case ErrorCode::expired: return "expired";
        case ErrorCode::conflict: return "conflict";
        case ErrorCode::payload_too_large: return "payload_too_large";
        case ErrorCode::rate_limited: return "rate_limited";
        case ErrorCode::capacity_exhausted: return "capacity_exhausted";
        case ErrorCode::insufficient_memory: return "insufficient_memory";
        case ErrorCode::timeout: return "timeout";
        case ErrorCode::vm_broken: return "vm_broken";
        case ErrorCode::guest_error: return "guest_error";
        case ErrorCode::unavailable: return "unavailable";
        case ErrorCode::internal: return "internal";
    }
    // An out-of-range enum value (a cast from a bad integer) is itself a bug.
    return "internal";
}

std::optional<ErrorCode> error_code_from_string(std::string_view name) noexcept {
    for (ErrorCode code : all_error_codes) {
        if (to_string(code) == name) return code;
    }
    return std::nullopt;
}

ServiceError::ServiceError(ErrorCode code, std::string message, std::optional<std::string> field,
                           std::optional<std::uint32_t> retry_after_seconds)
    : std::runtime_error(std::string(to_string(code)) + ": " + message),
      code_(code),
      message_(std::move(message)),
      field_(std::move(field)),
      retry_after_(retry_after_seconds) {}

ServiceError ServiceError::invalid_argument(std::string field, std::string message) {
    return ServiceError(ErrorCode::invalid_argument, std::move(message), std::move(field));
}

ServiceError ServiceError::not_found(std::string message) {
    return ServiceError(ErrorCode::not_found, std::move(message));
}

ServiceError ServiceError::capacity_exhausted(std::string message, std::uint32_t retry_after_seconds) {
    return ServiceError(ErrorCode::capacity_exhausted, std::move(message), std::nullopt, retry_after_seconds);
}

ServiceError ServiceError::internal(std::string message) {
    return ServiceError(ErrorCode::internal, std::move(message));
}

}  // namespace forkvm::pool
