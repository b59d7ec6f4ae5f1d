#pragma once
// THE one place that maps a service error to an HTTP response. Handlers never
// pick a status code for an error themselves: they throw or return a
// pool::ServiceError and call make_error_response with it.
//
// Mapping (see docs/configuration.md "Errors" for the client-facing table):
//   invalid_argument 400, unauthorized 401, forbidden 403, not_found 404,
//   expired 404 (own code "expired", so clients can tell "never existed" from
//   "timed out"), conflict 409, payload_too_large 413, rate_limited 429,
//   capacity_exhausted / insufficient_memory / unavailable 503 (all with
//   Retry-After), timeout 504, vm_broken / guest_error 502 (the failure is in
//   the VM we front, not in forkvm: alerting can tell them from our bugs),
//   internal 500 (only for forkvm bugs; the message is replaced by a generic
//   one so internals never leak — log the real one with the request id).

#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <string_view>

#include "pool/service_error.hpp"

namespace forkvm::server {

struct ErrorResponse {
    int status = 500;
    // {"error": {"code": "...", "message": "...", "field": "...", "request_id": "..."}}
    std::string body;
    // Seconds for a Retry-After header; set for 429 and 503.
    std::optional<std::uint32_t> retry_after;
};

// The HTTP status for a code (the table above).
int http_status(pool::ErrorCode code) noexcept;

// Retry-After used for 429/503 when the service gave no hint of its own.
inline constexpr std::uint32_t default_retry_after_seconds = 1;

// Builds the response for a service error. request_id is echoed when non-empty.
ErrorResponse make_error_response(const pool::ServiceError& error, std::string_view request_id = {});

// For a catch(...) at the top of a handler: a ServiceError maps as above,
// std::bad_alloc becomes insufficient_memory, anything else internal.
ErrorResponse make_error_response(const std::exception_ptr& error, std::string_view request_id = {});

}  // namespace forkvm::server
