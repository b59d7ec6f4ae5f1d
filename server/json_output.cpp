#include "server/json_output.hpp"

#include <ctime>
#include <fmt/format.h>

#include "server/encoding.hpp"

namespace forkvm::server {

std::string format_time_ns(std::int64_t unix_ns) {
    std::int64_t seconds = unix_ns / 1'000'000'000;
    std::int64_t rem_ns = unix_ns % 1'000'000'000;
    if (rem_ns < 0) {
        rem_ns += 1'000'000'000;
        --seconds;
    }
    const auto t = static_cast<std::time_t>(seconds);
    std::tm tm{};
    gmtime_r(&t, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                       tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, rem_ns / 1'000'000);
}

std::string format_time(pool::TimePoint time) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(time.time_since_epoch()).count();
    return format_time_ns(static_cast<std::int64_t>(ns));
}

std::string octal_mode(std::uint32_t mode) { return fmt::format("{:04o}", mode & 07777U); }

std::string_view file_type_name(proto::FileType type) noexcept {
    switch (type) {
        case proto::FileType::file: return "file";
        case proto::FileType::directory: return "directory";
        case proto::FileType::symlink: return "symlink";
        case proto::FileType::other: return "other";
    }
    return "other";
}

Json sandbox_json(const pool::Sandbox& sandbox) {
    Json out;
    out["id"] = sandbox.info.id;
    out["state"] = std::string(pool::to_string(sandbox.info.state));
    if (sandbox.info.state == pool::SandboxState::broken) out["broken_reason"] = sandbox.info.broken_reason;
    out["created_at"] = format_time(sandbox.info.created);
    out["expires_at"] = format_time(sandbox.info.expires);
    out["labels"] = Json::object();
    for (const auto& [k, v] : sandbox.info.labels) out["labels"][k] = v;
    out["env"] = Json::object();
    for (const auto& [k, v] : sandbox.env) out["env"][k] = v;
    out["user"] = sandbox.user;
    out["template"] = sandbox.template_name.empty() ? Json(nullptr) : Json(sandbox.template_name);
    out["egress"] = sandbox.egress.to_json();
    return out;
}

void put_output(Json& object, const std::string& key, const std::string& encoding_key,
                std::string_view bytes) {
    if (is_valid_utf8(bytes)) {
        object[key] = std::string(bytes);
        object[encoding_key] = "utf-8";
    } else {
        object[key] = base64_encode(bytes);
        object[encoding_key] = "base64";
    }
}

void put_exit_fields(Json& object, const vmm::ExecResult& result) {
    // A process killed by a signal has no exit code (the agent reports -1).
    const bool signalled = result.term_signal != 0;
    object["exit_code"] = signalled ? Json(nullptr) : Json(result.exit_code);
    object["signal"] = signalled ? Json(result.term_signal) : Json(nullptr);
    object["timed_out"] = result.timed_out;
    object["cancelled"] = result.cancelled;
    object["stdout_truncated"] = result.stdout_truncated;
    object["stderr_truncated"] = result.stderr_truncated;
    object["duration_ms"] = static_cast<double>(result.duration.count()) / 1000.0;
}

Json exec_result_json(const vmm::BufferedExecResult& result) {
    Json out;
    put_exit_fields(out, result);
    put_output(out, "stdout", "stdout_encoding", result.stdout_data);
    put_output(out, "stderr", "stderr_encoding", result.stderr_data);
    return out;
}

Json stat_json(const std::string& path, const proto::StatResult& stat) {
    Json out;
    out["path"] = path;
    out["type"] = std::string(file_type_name(stat.type));
    out["size"] = stat.size;
    out["mode"] = octal_mode(stat.mode);
    out["mtime"] = format_time_ns(stat.mtime_ns);
    out["uid"] = stat.uid;
    out["gid"] = stat.gid;
    return out;
}

Json dir_json(const std::string& path, const proto::DirEntries& entries) {
    Json out;
    out["path"] = path;
    out["entries"] = Json::array();
    for (const auto& entry : entries.entries) {
        Json e;
        e["name"] = entry.name;
        e["type"] = std::string(file_type_name(entry.type));
        e["size"] = entry.size;
        e["mode"] = octal_mode(entry.mode);
        out["entries"].push_back(std::move(e));
    }
    out["truncated"] = entries.truncated;
    return out;
}

namespace {

Json pool_stats_json(const pool::PoolStats& stats) {
    Json out;
    out["warm"] = stats.warm;
    out["forking"] = stats.forking;
    out["leased"] = stats.leased;
    out["forks"] = stats.forks;
    out["fork_failures"] = stats.fork_failures;
    return out;
}

}  // namespace

Json pools_json(const std::vector<pool::PoolInfo>& pools) {
    Json out;
    out["pools"] = Json::array();
    for (const auto& info : pools) {
        Json pool_json = pool_stats_json(info.stats);
        pool_json["name"] = info.template_name.empty() ? "default" : info.template_name;
        pool_json["template"] = info.template_name.empty() ? Json(nullptr) : Json(info.template_name);
        pool_json["min_warm"] = info.min_warm;
        pool_json["max_warm"] = info.max_warm;
        out["pools"].push_back(std::move(pool_json));
    }
    return out;
}

Json snapshot_json(const pool::SnapshotInfo& snapshot) {
    Json out;
    out["id"] = snapshot.id;
    out["source_sandbox"] = snapshot.source_sandbox.empty() ? Json(nullptr) : Json(snapshot.source_sandbox);
    out["created_at"] = format_time(snapshot.created);
    out["labels"] = Json::object();
    for (const auto& [k, v] : snapshot.labels) out["labels"][k] = v;
    out["memory_bytes"] = snapshot.memory_bytes;
    out["disk_bytes"] = snapshot.disk_bytes;
    out["templates"] = snapshot.templates;
    return out;
}

Json template_json(const pool::TemplateInfo& info) {
    Json out;
    out["name"] = info.name;
    out["snapshot_id"] = info.snapshot_id;
    out["state"] = std::string(pool::to_string(info.state));
    if (info.state == pool::TemplateState::failed) out["error"] = info.error;
    out["created_at"] = format_time(info.created);
    out["min_warm"] = info.pool.min_warm;
    out["max_warm"] = info.pool.max_warm;
    out["pool"] = pool_stats_json(info.stats);
    out["egress"] = info.egress.to_json();
    return out;
}

std::string dump(const Json& value) { return value.dump(-1, ' ', false, Json::error_handler_t::replace); }

}  // namespace forkvm::server
