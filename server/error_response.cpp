#include "server/error_response.hpp"

#include <new>
#include <nlohmann/json.hpp>

namespace forkvm::server {

namespace {

// Messages can quote client input; keep bodies bounded whatever a service puts in.
constexpr std::size_t max_message_bytes = 1024;

constexpr std::string_view generic_internal_message = "internal error";

bool needs_retry_after(int status) { return status == 429 || status == 503; }

}  // namespace

int http_status(pool::ErrorCode code) noexcept {
    using pool::ErrorCode;
    switch (code) {
        case ErrorCode::invalid_argument: return 400;
        case ErrorCode::unauthorized: return 401;
        case ErrorCode::forbidden: return 403;
        case ErrorCode::not_found: return 404;
        case ErrorCode::expired: return 404;
        case ErrorCode::conflict: return 409;
        case ErrorCode::payload_too_large: return 413;
        case ErrorCode::rate_limited: return 429;
        case ErrorCode::capacity_exhausted: return 503;
        case ErrorCode::insufficient_memory: return 503;
        case ErrorCode::unavailable: return 503;
        case ErrorCode::timeout: return 504;
        case ErrorCode::vm_broken: return 502;
        case ErrorCode::guest_error: return 502;
        case ErrorCode::internal: return 500;
    }
    return 500;
}

ErrorResponse make_error_response(const pool::ServiceError& error, std::string_view request_id) {
    ErrorResponse response;
    response.status = http_status(error.code());

    std::string message =
        error.code() == pool::ErrorCode::internal ? std::string(generic_internal_message) : error.message();
    if (message.size() > max_message_bytes) message.resize(max_message_bytes);

    nlohmann::ordered_json inner;
    inner["code"] = std::string(pool::to_string(error.code()));
    inner["message"] = std::move(message);
    if (error.field() && !error.field()->empty()) inner["field"] = *error.field();
    if (!request_id.empty()) inner["request_id"] = std::string(request_id);
    nlohmann::ordered_json outer;
    outer["error"] = std::move(inner);
    // replace: a message cut mid-UTF-8 sequence (or quoting binary input)
    // must still give valid JSON instead of throwing.
    response.body = outer.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);

    if (needs_retry_after(response.status)) {
        response.retry_after = error.retry_after_seconds().value_or(default_retry_after_seconds);
    }
    return response;
}

ErrorResponse make_error_response(const std::exception_ptr& error, std::string_view request_id) {
    try {
        if (error) std::rethrow_exception(error);
    } catch (const pool::ServiceError& service_error) {
        return make_error_response(service_error, request_id);
    } catch (const std::bad_alloc&) {
        return make_error_response(pool::ServiceError(pool::ErrorCode::insufficient_memory, "out of memory"),
                                   request_id);
    } catch (...) {
        // Falls through to the generic internal error below.
    }
    return make_error_response(pool::ServiceError::internal("unexpected exception"), request_id);
}

}  // namespace forkvm::server
