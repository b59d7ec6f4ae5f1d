#pragma once
// Strict reading of JSON request bodies: every helper throws
// ServiceError(invalid_argument) naming the field at fault, so a typo, a
// wrong type or an out-of-range number never passes silently.

#include <cstdint>
#include <initializer_list>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forkvm::server::json_input {

// Parses a body that must be a JSON object; an empty body is {} when
// allow_empty. Bad JSON -> invalid_argument with field "body".
nlohmann::json parse_object(std::string_view body, bool allow_empty);

// Rejects any key not in `allowed` (field = that key).
void reject_unknown(const nlohmann::json& object, std::initializer_list<std::string_view> allowed);

std::optional<std::int64_t> get_int(const nlohmann::json& object, const std::string& key, std::int64_t min,
                                    std::int64_t max);
std::optional<std::string> get_string(const nlohmann::json& object, const std::string& key);
std::optional<bool> get_bool(const nlohmann::json& object, const std::string& key);
std::optional<std::map<std::string, std::string>> get_string_map(const nlohmann::json& object,
                                                                 const std::string& key);
std::optional<std::vector<std::string>> get_string_array(const nlohmann::json& object,
                                                         const std::string& key);

// An absolute guest path without NUL bytes; otherwise invalid_argument(field).
void check_guest_path(const std::string& path, const std::string& field);

// "0644" / "644" / "0o644": an octal permission mode <= 07777.
std::optional<std::uint32_t> parse_octal_mode(std::string_view text) noexcept;

}  // namespace forkvm::server::json_input
