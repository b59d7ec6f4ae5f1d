#include "server/request_decode.hpp"

#include <algorithm>
#include <limits>

#include "pool/service_error.hpp"
#include "pool/template_catalog.hpp"
#include "server/encoding.hpp"
#include "server/json_input.hpp"

namespace forkvm::server {

namespace {

using json_input::get_bool;
using json_input::get_int;
using json_input::get_string;
using json_input::get_string_map;
using pool::ServiceError;

// Largest integer a JSON number carries exactly in every client (2^53 - 1).
constexpr std::int64_t max_json_int = 9'007'199'254'740'991;
constexpr std::int64_t max_timeout_ms = std::numeric_limits<std::int32_t>::max();

std::optional<std::chrono::milliseconds> ttl_of(const nlohmann::json& body) {
    const auto ttl = get_int(body, "ttl_ms", 1, max_json_int);
    if (!ttl) return std::nullopt;
    return std::chrono::milliseconds(*ttl);
}

void check_env(const pool::EnvMap& env) {
    for (const auto& [name, value] : env) {
        if (name.empty() || name.find('=') != std::string::npos || name.find('\0') != std::string::npos) {
            throw ServiceError::invalid_argument("env", "bad variable name \"" + name + "\"");
        }
        if (value.find('\0') != std::string::npos) {
            throw ServiceError::invalid_argument("env", "value of " + name + " contains NUL");
        }
    }
}

// The "egress" field: a policy document (docs/egress.md), errors naming
// the field inside it ("egress.allow[0].ports[1]").
std::optional<http_proxy::Policy> egress_of(const nlohmann::json& body) {
    const auto it = body.find("egress");
    if (it == body.end()) return std::nullopt;
    try {
        return http_proxy::Policy::parse(*it);
    } catch (const http_proxy::PolicyError& e) {
        const std::string message = e.what();
        const std::string prefix = e.path().empty() ? std::string() : e.path() + ": ";
        throw ServiceError::invalid_argument(e.path().empty() ? "egress" : "egress." + e.path(),
                                             message.substr(prefix.size()));
    }
}

}  // namespace

pool::CreateSandbox decode_create(std::string_view text) {
    const auto body = json_input::parse_object(text, true);
    json_input::reject_unknown(body, {"template", "ttl_ms", "labels", "env", "user", "egress"});
    pool::CreateSandbox request;
    request.template_name = get_string(body, "template").value_or("");
    if (body.contains("template")) pool::check_template_name(request.template_name);
    request.ttl = ttl_of(body);
    request.labels = get_string_map(body, "labels").value_or(pool::Labels{});
    request.env = get_string_map(body, "env").value_or(pool::EnvMap{});
    check_env(request.env);
    request.user = get_string(body, "user").value_or("");
    request.egress = egress_of(body);
    return request;
}

pool::CreateSnapshot decode_snapshot(std::string_view text) {
    const auto body = json_input::parse_object(text, true);
    json_input::reject_unknown(body, {"labels"});
    pool::CreateSnapshot request;
    request.labels = get_string_map(body, "labels").value_or(pool::Labels{});
    return request;
}

namespace {

constexpr std::int64_t max_pool_size = 1000;  // the service applies its own, smaller limit

std::optional<std::size_t> pool_size(const nlohmann::json& body, const std::string& key) {
    const auto value = get_int(body, key, 0, max_pool_size);
    if (!value) return std::nullopt;
    return static_cast<std::size_t>(*value);
}

}  // namespace

pool::CreateTemplate decode_create_template(std::string_view text) {
    const auto body = json_input::parse_object(text, false);
    json_input::reject_unknown(body, {"name", "snapshot_id", "min_warm", "max_warm", "egress"});
    pool::CreateTemplate request;
    request.name = get_string(body, "name").value_or("");
    pool::check_template_name(request.name);
    request.snapshot_id = get_string(body, "snapshot_id").value_or("");
    if (request.snapshot_id.empty()) throw ServiceError::invalid_argument("snapshot_id", "is required");
    request.min_warm = pool_size(body, "min_warm");
    request.max_warm = pool_size(body, "max_warm");
    request.egress = egress_of(body).value_or(http_proxy::Policy());
    return request;
}

pool::UpdateTemplate decode_update_template(std::string_view text) {
    const auto body = json_input::parse_object(text, false);
    json_input::reject_unknown(body, {"min_warm", "max_warm"});
    pool::UpdateTemplate request;
    request.min_warm = pool_size(body, "min_warm");
    request.max_warm = pool_size(body, "max_warm");
    if (!request.min_warm && !request.max_warm) {
        throw ServiceError::invalid_argument("min_warm", "give min_warm, max_warm or both");
    }
    return request;
}

std::optional<std::chrono::milliseconds> decode_keepalive(std::string_view text) {
    const auto body = json_input::parse_object(text, true);
    json_input::reject_unknown(body, {"ttl_ms"});
    return ttl_of(body);
}

pool::ForkSandbox decode_fork(std::string_view text, const DecodeLimits& limits) {
    const auto body = json_input::parse_object(text, true);
    json_input::reject_unknown(body, {"count", "ttl_ms", "labels"});
    pool::ForkSandbox request;
    const auto max_count = static_cast<std::int64_t>(std::max<std::size_t>(limits.max_fork_count, 1));
    request.count = static_cast<std::size_t>(get_int(body, "count", 1, max_count).value_or(1));
    request.ttl = ttl_of(body);
    request.labels = get_string_map(body, "labels").value_or(pool::Labels{});
    return request;
}

pool::ExecCall decode_exec(std::string_view text, const DecodeLimits& limits) {
    const auto body = json_input::parse_object(text, false);
    json_input::reject_unknown(body, {"cmd", "shell", "env", "cwd", "user", "timeout_ms", "stdin",
                                      "stdin_base64", "max_output_bytes"});
    pool::ExecCall call;
    const auto cmd = json_input::get_string_array(body, "cmd");
    const auto shell = get_string(body, "shell");
    if (cmd && shell) throw ServiceError::invalid_argument("cmd", "give either cmd or shell, not both");
    if (!cmd && !shell) throw ServiceError::invalid_argument("cmd", "cmd or shell is required");
    if (cmd) {
        if (cmd->empty()) throw ServiceError::invalid_argument("cmd", "must not be empty");
        if (cmd->front().empty())
            throw ServiceError::invalid_argument("cmd", "the program must not be empty");
        call.argv = *cmd;
    } else {
        if (shell->empty()) throw ServiceError::invalid_argument("shell", "must not be empty");
        call.argv = {"/bin/sh", "-c", *shell};
    }
    for (const auto& arg : call.argv) {
        if (arg.find('\0') != std::string::npos) {
            throw ServiceError::invalid_argument(cmd ? "cmd" : "shell", "must not contain NUL");
        }
    }
    call.env = get_string_map(body, "env").value_or(pool::EnvMap{});
    check_env(call.env);
    call.cwd = get_string(body, "cwd").value_or("");
    if (!call.cwd.empty()) json_input::check_guest_path(call.cwd, "cwd");
    call.user = get_string(body, "user").value_or("");
    call.timeout = std::chrono::milliseconds(get_int(body, "timeout_ms", 1, max_timeout_ms).value_or(0));
    const auto stdin_text = get_string(body, "stdin");
    const auto stdin_b64 = get_string(body, "stdin_base64");
    if (stdin_text && stdin_b64) {
        throw ServiceError::invalid_argument("stdin_base64", "give either stdin or stdin_base64, not both");
    }
    if (stdin_text) call.stdin_data = *stdin_text;
    if (stdin_b64) {
        auto decoded = base64_decode(*stdin_b64);
        if (!decoded) throw ServiceError::invalid_argument("stdin_base64", "not valid base64");
        call.stdin_data = std::move(*decoded);
    }
    const auto max_output = get_int(body, "max_output_bytes", 0, max_json_int);
    call.max_output_bytes = limits.max_output_bytes;
    if (max_output)
        call.max_output_bytes = std::min(static_cast<std::uint64_t>(*max_output), limits.max_output_bytes);
    return call;
}

MkdirRequest decode_mkdir(std::string_view text) {
    const auto body = json_input::parse_object(text, false);
    json_input::reject_unknown(body, {"path", "parents", "mode"});
    MkdirRequest request;
    const auto path = get_string(body, "path");
    if (!path) throw ServiceError::invalid_argument("path", "a path is required");
    json_input::check_guest_path(*path, "path");
    request.path = *path;
    request.parents = get_bool(body, "parents").value_or(false);
    if (const auto mode = get_string(body, "mode")) {
        const auto parsed = json_input::parse_octal_mode(*mode);
        if (!parsed) throw ServiceError::invalid_argument("mode", "must be an octal string such as \"0755\"");
        request.mode = *parsed;
    }
    return request;
}

MoveRequest decode_move(std::string_view text) {
    const auto body = json_input::parse_object(text, false);
    json_input::reject_unknown(body, {"from", "to"});
    MoveRequest request;
    const auto from = get_string(body, "from");
    if (!from) throw ServiceError::invalid_argument("from", "a path is required");
    const auto to = get_string(body, "to");
    if (!to) throw ServiceError::invalid_argument("to", "a path is required");
    json_input::check_guest_path(*from, "from");
    json_input::check_guest_path(*to, "to");
    request.from = *from;
    request.to = *to;
    return request;
}

pool::ListSandboxes decode_list_query(const Query& query) {
    reject_unknown_params(query, {"label", "limit", "page_token"});
    pool::ListSandboxes request;
    for (const auto& label : query.all("label")) {
        const auto eq = label.find('=');
        if (eq == std::string::npos || eq == 0)
            throw ServiceError::invalid_argument("label", "must be key=value");
        request.label_filter[label.substr(0, eq)] = label.substr(eq + 1);
    }
    request.limit = static_cast<std::size_t>(query.get_uint("limit", 1, 1000).value_or(100));
    request.page_token = query.get("page_token").value_or("");
    if (request.page_token.size() > 256) throw ServiceError::invalid_argument("page_token", "too long");
    return request;
}

std::string decode_path_param(const Query& query) {
    auto path = query.get("path");
    if (!path) throw ServiceError::invalid_argument("path", "the path query parameter is required");
    json_input::check_guest_path(*path, "path");
    return std::move(*path);
}

vmm::WriteFileRequest decode_write_query(const Query& query) {
    reject_unknown_params(query, {"path", "mode", "parents", "append"});
    vmm::WriteFileRequest request;
    request.path = decode_path_param(query);
    if (const auto mode = query.get("mode")) {
        const auto parsed = json_input::parse_octal_mode(*mode);
        if (!parsed) throw ServiceError::invalid_argument("mode", "must be an octal mode such as 0644");
        request.mode = *parsed;
    }
    request.create_parents = query.get_bool("parents").value_or(false);
    request.append = query.get_bool("append").value_or(false);
    return request;
}

vmm::ReadFileRequest decode_read_query(const Query& query) {
    reject_unknown_params(query, {"path", "offset", "length"});
    vmm::ReadFileRequest request;
    request.path = decode_path_param(query);
    request.offset = query.get_uint("offset", 0, std::numeric_limits<std::int64_t>::max()).value_or(0);
    request.max_bytes = query.get_uint("length", 1, std::numeric_limits<std::int64_t>::max()).value_or(0);
    return request;
}

void reject_unknown_params(const Query& query, std::initializer_list<std::string_view> allowed) {
    for (const auto& [name, value] : query.params()) {
        if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
            throw ServiceError::invalid_argument(name, "unknown query parameter");
        }
    }
}

}  // namespace forkvm::server
