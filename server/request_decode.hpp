#pragma once
// Turns validated request bodies and query strings into the service's
// request structs (docs/api.md). Every function throws
// ServiceError(invalid_argument) naming the field or parameter at fault.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "pool/sandbox_service.hpp"
#include "server/query.hpp"

namespace forkvm::server {

struct DecodeLimits {
    std::size_t max_fork_count = 16;
    std::uint64_t max_output_bytes = 16U * 1024U * 1024U;  // per stream, clamps max_output_bytes
};

pool::CreateSandbox decode_create(std::string_view body);
std::optional<std::chrono::milliseconds> decode_keepalive(std::string_view body);
pool::CreateSnapshot decode_snapshot(std::string_view body);
pool::CreateTemplate decode_create_template(std::string_view body);
pool::UpdateTemplate decode_update_template(std::string_view body);
pool::ForkSandbox decode_fork(std::string_view body, const DecodeLimits& limits);
pool::ExecCall decode_exec(std::string_view body, const DecodeLimits& limits);

struct MkdirRequest {
    std::string path;
    bool parents = false;
    std::uint32_t mode = 0755;
};
MkdirRequest decode_mkdir(std::string_view body);

struct MoveRequest {
    std::string from;
    std::string to;
};
MoveRequest decode_move(std::string_view body);

// GET /v1/sandboxes query: label=k=v (repeatable), limit, page_token.
pool::ListSandboxes decode_list_query(const Query& query);

// The required `path` query parameter of the files routes.
std::string decode_path_param(const Query& query);
vmm::WriteFileRequest decode_write_query(const Query& query);
vmm::ReadFileRequest decode_read_query(const Query& query);

// Rejects query parameters a route does not know (field = the parameter).
void reject_unknown_params(const Query& query, std::initializer_list<std::string_view> allowed);

}  // namespace forkvm::server
