#pragma once
// The small file operations (one request, one reply), done natively with
// system calls, as the agent's user (root in the VM). Each returns the reply
// message: its normal reply or an proto::Error.

#include <cstdint>
#include <optional>
#include <string>

#include "guest/protocol/messages.hpp"

namespace forkvm::agent {

// Paths must be absolute and free of NUL bytes: nullopt if fine, else the
// invalid_argument Error to send back.
[[nodiscard]] std::optional<proto::Error> check_path(const std::string& path);

// An Error from an errno: code by proto::error_code_from_errno, message
// "<what> <path>: <strerror>".
[[nodiscard]] proto::Error errno_error(int err, const std::string& what, const std::string& path);

// mkdir -p of `path` (every missing component gets `mode`, an existing
// directory is fine). Returns 0 or an errno.
[[nodiscard]] int make_dirs(const std::string& path, std::uint32_t mode);

[[nodiscard]] proto::Message do_stat(const proto::Stat& req);
[[nodiscard]] proto::Message do_list_dir(const proto::ListDir& req, std::uint32_t max_entries_cap);
[[nodiscard]] proto::Message do_exists(const proto::Exists& req);
[[nodiscard]] proto::Message do_remove(const proto::Remove& req);
[[nodiscard]] proto::Message do_rename(const proto::Rename& req);
[[nodiscard]] proto::Message do_mkdir(const proto::Mkdir& req);

}  // namespace forkvm::agent
