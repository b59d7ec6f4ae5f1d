#pragma once
// A folder only the server's user may enter (mode 0700), created if
// missing: where snapshots, templates and spooled uploads live.

#include <filesystem>
#include <string>

#include "pool/service_error.hpp"

namespace forkvm::pool {

// Throws ServiceError(invalid_argument, field "data_dir") when it cannot be created.
inline void ensure_private_dir(const std::string& path) {
    std::error_code ec;
    std::filesystem::create_directories(path, ec);
    if (ec) throw ServiceError::invalid_argument("data_dir", "cannot create " + path + ": " + ec.message());
    std::filesystem::permissions(path, std::filesystem::perms::owner_all,
                                 std::filesystem::perm_options::replace, ec);
}

}  // namespace forkvm::pool
