#include "server/response.hpp"

#include "server/error_response.hpp"

namespace forkvm::server {

namespace {

Response from_error_response(ErrorResponse mapped, const pool::ServiceError* error, std::string code) {
    Response response;
    response.status = mapped.status;
    response.body = std::move(mapped.body);
    if (mapped.retry_after) response.headers.emplace_back("Retry-After", std::to_string(*mapped.retry_after));
    response.error_code = std::move(code);
    if (error != nullptr) response.error_message = error->message();
    return response;
}

}  // namespace

Response json_response(int status, const Json& body) {
    Response response;
    response.status = status;
    response.body = dump(body);
    return response;
}

Response empty_response(int status) {
    Response response;
    response.status = status;
    response.content_type.clear();
    return response;
}

Response error_response(const pool::ServiceError& error, const std::string& request_id) {
    return from_error_response(make_error_response(error, request_id), &error,
                               std::string(pool::to_string(error.code())));
}

Response error_response(const std::exception_ptr& error, const std::string& request_id) {
    try {
        if (error) std::rethrow_exception(error);
    } catch (const pool::ServiceError& service_error) {
        return error_response(service_error, request_id);
    } catch (const std::exception& other) {
        auto response = from_error_response(make_error_response(error, request_id), nullptr, "");
        response.error_code = response.status == 503 ? "insufficient_memory" : "internal";
        response.error_message = other.what();
        return response;
    } catch (...) {
    }
    auto response = from_error_response(make_error_response(error, request_id), nullptr, "internal");
    response.error_message = "unknown exception";
    return response;
}

Response error_response_with_status(int status, const pool::ServiceError& error,
                                    const std::string& request_id) {
    auto response = error_response(error, request_id);
    response.status = status;
    return response;
}

}  // namespace forkvm::server
