#pragma once
// openapi/openapi.yaml, embedded at build time (server/embed_file.cmake).

#include <string_view>

namespace forkvm::server {

std::string_view openapi_yaml() noexcept;

}  // namespace forkvm::server
