#pragma once
// X-Request-Id: a client's id is echoed when it is 1..64 chars of
// [A-Za-z0-9._-] (so it is safe in logs and headers); otherwise a fresh one.

#include <string>
#include <string_view>

namespace forkvm::server {

bool is_valid_request_id(std::string_view id) noexcept;
std::string generate_request_id();  // "req-" + 16 random hex chars
std::string request_id_for(std::string_view client_value);

}  // namespace forkvm::server
