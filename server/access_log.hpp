#pragma once
// One log line per request through spdlog: method, target (secrets in the
// query redacted), status, bytes, duration, request id and owner id. The API
// key itself never reaches a log line (only its owner id does).

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace forkvm::server {

struct AccessLogEntry {
    std::string request_id;
    std::string method;
    std::string target;  // already redacted
    int status = 0;
    std::uint64_t bytes = 0;  // response body bytes
    std::chrono::microseconds duration{};
    std::string owner;
    std::string error_code;
    std::string error_message;  // logged for 5xx (internal errors are masked in the body)
};

// The target with the values of secret-looking query parameters (token,
// key, secret, password, auth) replaced by "***", capped in length.
std::string redact_target(std::string_view target);

void log_access(const AccessLogEntry& entry);

}  // namespace forkvm::server
