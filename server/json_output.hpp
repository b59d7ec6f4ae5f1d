#pragma once
// Response bodies as docs/api.md specifies them: RFC 3339 times with
// milliseconds, modes as octal strings, output as UTF-8 text or base64.

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "pool/sandbox_service.hpp"

namespace forkvm::server {

using Json = nlohmann::ordered_json;

// "2026-11-28T04:30:00.123Z"
std::string format_time(pool::TimePoint time);
std::string format_time_ns(std::int64_t unix_ns);
// "0644"
std::string octal_mode(std::uint32_t mode);
std::string_view file_type_name(proto::FileType type) noexcept;

Json sandbox_json(const pool::Sandbox& sandbox);

// Sets <prefix> to the text (or base64) and <prefix>_encoding to "utf-8"/"base64".
void put_output(Json& object, const std::string& key, const std::string& encoding_key,
                std::string_view bytes);

// The exit fields shared by buffered results and the stream's "exit" event.
void put_exit_fields(Json& object, const vmm::ExecResult& result);
Json exec_result_json(const vmm::BufferedExecResult& result);

Json stat_json(const std::string& path, const proto::StatResult& stat);
Json dir_json(const std::string& path, const proto::DirEntries& entries);
Json pools_json(const std::vector<pool::PoolInfo>& pools);
Json snapshot_json(const pool::SnapshotInfo& snapshot);
Json template_json(const pool::TemplateInfo& info);

// dump() that never throws on invalid UTF-8 (it is replaced by U+FFFD).
std::string dump(const Json& value);

}  // namespace forkvm::server
