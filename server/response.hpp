#pragma once
// What a handler produces: a complete response, or (through ResponseStream)
// a chunked one written piece by piece from the worker thread.

#include <exception>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "pool/service_error.hpp"
#include "server/json_output.hpp"

namespace forkvm::server {

struct Response {
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string error_code;     // the API error code of an error response, for metrics and logs
    std::string error_message;  // the real message (internal errors are masked in the body), for logs
    bool close = false;         // close the connection after this response
    bool abort_stream = false;  // a started stream failed: close without the final chunk
};

Response json_response(int status, const Json& body);
Response empty_response(int status);  // 204

// Through make_error_response (server/error_response.hpp), plus Retry-After.
Response error_response(const pool::ServiceError& error, const std::string& request_id);
Response error_response(const std::exception_ptr& error, const std::string& request_id);
// Statuses the service layer has no code for: 405/415/431 keep the code the
// API documents (invalid_argument / payload_too_large) with their own status.
Response error_response_with_status(int status, const pool::ServiceError& error,
                                    const std::string& request_id);

// Implemented by the connection; every call blocks the calling worker
// thread until the bytes are written (backpressure) and returns false once
// the client is gone (further calls are then no-ops).
class ResponseStream {
public:
    virtual ~ResponseStream() = default;
    ResponseStream() = default;
    ResponseStream(const ResponseStream&) = delete;
    ResponseStream& operator=(const ResponseStream&) = delete;

    // Status line and headers of a chunked response.
    virtual bool begin(int status, std::string_view content_type) = 0;
    virtual bool write(std::string_view data) = 0;  // one chunk (empty data is skipped)
    virtual bool started() const = 0;
};

}  // namespace forkvm::server
