#include "server/json_input.hpp"

#include <algorithm>

#include "pool/service_error.hpp"

namespace forkvm::server::json_input {

namespace {

using pool::ServiceError;

const char* type_name(const nlohmann::json& value) { return value.type_name(); }

// Bounds nesting so a body of "[[[[..." cannot exhaust the stack while parsing.
constexpr int max_depth = 32;

bool depth_ok(std::string_view body) noexcept {
    int depth = 0;
    bool in_string = false;
    bool escaped = false;
    for (const char c : body) {
        if (in_string) {
            if (escaped) {
                escaped = false;
            } else if (c == '\\') {
                escaped = true;
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth) return false;
        } else if (c == '}' || c == ']') {
            --depth;
        }
    }
    return true;
}

}  // namespace

nlohmann::json parse_object(std::string_view body, bool allow_empty) {
    const bool blank = std::all_of(body.begin(), body.end(),
                                   [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; });
    if (blank) {
        if (allow_empty) return nlohmann::json::object();
        throw ServiceError::invalid_argument("body", "a JSON object is required");
    }
    if (!depth_ok(body)) throw ServiceError::invalid_argument("body", "JSON nested too deeply");
    nlohmann::json value = nlohmann::json::parse(body, nullptr, false);
    if (value.is_discarded()) throw ServiceError::invalid_argument("body", "malformed JSON");
    if (!value.is_object()) throw ServiceError::invalid_argument("body", "the body must be a JSON object");
    return value;
}

void reject_unknown(const nlohmann::json& object, std::initializer_list<std::string_view> allowed) {
    for (const auto& item : object.items()) {
        if (std::find(allowed.begin(), allowed.end(), item.key()) == allowed.end()) {
            throw ServiceError::invalid_argument(item.key(), "unknown field");
        }
    }
}

std::optional<std::int64_t> get_int(const nlohmann::json& object, const std::string& key, std::int64_t min,
                                    std::int64_t max) {
    const auto it = object.find(key);
    if (it == object.end()) return std::nullopt;
    if (!it->is_number_integer()) {
        throw ServiceError::invalid_argument(key, std::string("must be an integer, not ") + type_name(*it));
    }
    bool in_range = false;
    std::int64_t value = 0;
    if (it->is_number_unsigned()) {
        const auto u = it->get<std::uint64_t>();
        if (u <= static_cast<std::uint64_t>(max)) {
            value = static_cast<std::int64_t>(u);
            in_range = value >= min;
        }
    } else {
        value = it->get<std::int64_t>();
        in_range = value >= min && value <= max;
    }
    if (!in_range) {
        throw ServiceError::invalid_argument(
            key, "must be between " + std::to_string(min) + " and " + std::to_string(max));
    }
    return value;
}

std::optional<std::string> get_string(const nlohmann::json& object, const std::string& key) {
    const auto it = object.find(key);
    if (it == object.end()) return std::nullopt;
    if (!it->is_string()) {
        throw ServiceError::invalid_argument(key, std::string("must be a string, not ") + type_name(*it));
    }
    return it->get<std::string>();
}

std::optional<bool> get_bool(const nlohmann::json& object, const std::string& key) {
    const auto it = object.find(key);
    if (it == object.end()) return std::nullopt;
    if (!it->is_boolean()) {
        throw ServiceError::invalid_argument(key, std::string("must be a boolean, not ") + type_name(*it));
    }
    return it->get<bool>();
}

std::optional<std::map<std::string, std::string>> get_string_map(const nlohmann::json& object,
                                                                 const std::string& key) {
    const auto it = object.find(key);
    if (it == object.end()) return std::nullopt;
    if (!it->is_object()) {
        throw ServiceError::invalid_argument(
            key, std::string("must be an object of strings, not ") + type_name(*it));
    }
    std::map<std::string, std::string> out;
    for (const auto& item : it->items()) {
        if (!item.value().is_string()) {
            throw ServiceError::invalid_argument(key, "value of \"" + item.key() + "\" must be a string");
        }
        out.emplace(item.key(), item.value().get<std::string>());
    }
    return out;
}

std::optional<std::vector<std::string>> get_string_array(const nlohmann::json& object,
                                                         const std::string& key) {
    const auto it = object.find(key);
    if (it == object.end()) return std::nullopt;
    if (!it->is_array()) {
        throw ServiceError::invalid_argument(
            key, std::string("must be an array of strings, not ") + type_name(*it));
    }
    std::vector<std::string> out;
    out.reserve(it->size());
    for (const auto& element : *it) {
        if (!element.is_string()) throw ServiceError::invalid_argument(key, "every element must be a string");
        out.push_back(element.get<std::string>());
    }
    return out;
}

void check_guest_path(const std::string& path, const std::string& field) {
    if (path.empty()) throw ServiceError::invalid_argument(field, "a path is required");
    if (path.front() != '/') throw ServiceError::invalid_argument(field, "must be an absolute path");
    if (path.find('\0') != std::string::npos)
        throw ServiceError::invalid_argument(field, "must not contain NUL");
}

std::optional<std::uint32_t> parse_octal_mode(std::string_view text) noexcept {
    if (text.starts_with("0o")) text.remove_prefix(2);
    if (text.empty() || text.size() > 5) return std::nullopt;
    std::uint32_t value = 0;
    for (const char c : text) {
        if (c < '0' || c > '7') return std::nullopt;
        value = value * 8U + static_cast<std::uint32_t>(c - '0');
    }
    if (value > 07777U) return std::nullopt;
    return value;
}

}  // namespace forkvm::server::json_input
