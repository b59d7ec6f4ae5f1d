#pragma once
// The typed error every service (pool, sandbox, files, exec, ...) reports.
// It carries no HTTP types: server/error_response.cpp is the one place that
// turns an ErrorCode into a status line and a JSON body.

#include <array>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>

namespace forkvm::pool {

// Keep this set small and stable: the strings below are part of the public
// API (clients switch on them), so codes are only ever added, never renamed.
enum class ErrorCode {
    invalid_argument,     // the request is malformed or a field is out of range
    unauthorized,         // no or unknown API key
    forbidden,            // key is valid but may not touch this resource
    not_found,            // no such sandbox/template/file
    expired,              // the sandbox existed but its TTL ran out
    conflict,             // state does not allow it (e.g. sandbox busy, already exists)
    payload_too_large,    // body or upload above the configured limit
    rate_limited,         // per-key quota reached; retry later
    capacity_exhausted,   // no warm VM and no room to start one; retry later
    insufficient_memory,  // host memory too low to start or fork a VM; retry later
    timeout,              // the operation did not finish in time (exec, lease wait)
    vm_broken,            // the VM died or its VMM failed; the sandbox is gone
    guest_error,          // the guest agent misbehaved or answered garbage
    unavailable,          // shutting down or not ready yet; retry later
    internal,             // a bug in forkvm itself
};

inline constexpr std::array<ErrorCode, 15> all_error_codes = {
    ErrorCode::invalid_argument,    ErrorCode::unauthorized, ErrorCode::forbidden,
    ErrorCode::not_found,           ErrorCode::expired,      ErrorCode::conflict,
    ErrorCode::payload_too_large,   ErrorCode::rate_limited, ErrorCode::capacity_exhausted,
    ErrorCode::insufficient_memory, ErrorCode::timeout,      ErrorCode::vm_broken,
    ErrorCode::guest_error,         ErrorCode::unavailable,  ErrorCode::internal,
};

// The stable machine-readable name, e.g. "not_found".
std::string_view to_string(ErrorCode code) noexcept;

// The inverse of to_string; nullopt for an unknown name.
std::optional<ErrorCode> error_code_from_string(std::string_view name) noexcept;

// Thrown (or returned by value) by services. Copyable, so it can also travel
// through std::exception_ptr or be stored in a result object.
class ServiceError : public std::runtime_error {
public:
    ServiceError(ErrorCode code, std::string message, std::optional<std::string> field = std::nullopt,
                 std::optional<std::uint32_t> retry_after_seconds = std::nullopt);

    ErrorCode code() const noexcept { return code_; }
    const std::string& message() const noexcept { return message_; }
    // The request field at fault, for invalid_argument / payload_too_large.
    const std::optional<std::string>& field() const noexcept { return field_; }
    // A hint for the client of when to retry (capacity, rate limits).
    std::optional<std::uint32_t> retry_after_seconds() const noexcept { return retry_after_; }

    // Shorthands for the common cases, so call sites read naturally.
    static ServiceError invalid_argument(std::string field, std::string message);
    static ServiceError not_found(std::string message);
    static ServiceError capacity_exhausted(std::string message, std::uint32_t retry_after_seconds);
    static ServiceError internal(std::string message);

private:
    ErrorCode code_;
    std::string message_;
    std::optional<std::string> field_;
    std::optional<std::uint32_t> retry_after_;
};

}  // namespace forkvm::pool
