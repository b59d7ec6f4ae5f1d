#include "server/query.hpp"

#include <charconv>

#include "pool/service_error.hpp"

namespace forkvm::server {

namespace {

int hex_digit(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Clients can send any number of parameters; cap what we keep.
constexpr std::size_t max_query_params = 256;

}  // namespace

Target split_target(std::string_view target) noexcept {
    const auto q = target.find('?');
    if (q == std::string_view::npos) return {target, {}};
    return {target.substr(0, q), target.substr(q + 1)};
}

std::optional<std::string> percent_decode(std::string_view text, bool plus_as_space) {
    std::string out;
    out.reserve(text.size());
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '%') {
            if (i + 2 >= text.size()) return std::nullopt;  // truncated escape
            const int hi = hex_digit(text[i + 1]);
            const int lo = hex_digit(text[i + 2]);
            if (hi < 0 || lo < 0) return std::nullopt;
            out.push_back(static_cast<char>(hi * 16 + lo));
            i += 2;
        } else if (c == '+' && plus_as_space) {
            out.push_back(' ');
        } else {
            out.push_back(c);
        }
    }
    return out;
}

Query Query::parse(std::string_view query) {
    Query result;
    while (!query.empty()) {
        const auto amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
        if (pair.empty()) continue;
        if (result.params_.size() >= max_query_params) {
            throw pool::ServiceError::invalid_argument("query", "too many query parameters");
        }
        const auto eq = pair.find('=');
        const std::string_view raw_name = pair.substr(0, eq);
        const std::string_view raw_value =
            eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
        auto name = percent_decode(raw_name, true);
        if (!name)
            throw pool::ServiceError::invalid_argument("query", "bad percent-encoding in a parameter name");
        auto value = percent_decode(raw_value, true);
        if (!value) throw pool::ServiceError::invalid_argument(*name, "bad percent-encoding");
        result.params_.emplace_back(std::move(*name), std::move(*value));
    }
    return result;
}

std::optional<std::string> Query::get(std::string_view name) const {
    std::optional<std::string> found;
    for (const auto& [k, v] : params_) {
        if (k != name) continue;
        if (found) throw pool::ServiceError::invalid_argument(std::string(name), "given more than once");
        found = v;
    }
    return found;
}

std::vector<std::string> Query::all(std::string_view name) const {
    std::vector<std::string> out;
    for (const auto& [k, v] : params_) {
        if (k == name) out.push_back(v);
    }
    return out;
}

bool Query::has(std::string_view name) const {
    for (const auto& entry : params_) {
        if (entry.first == name) return true;
    }
    return false;
}

std::optional<bool> Query::get_bool(std::string_view name) const {
    const auto value = get(name);
    if (!value) return std::nullopt;
    if (*value == "true" || *value == "1") return true;
    if (*value == "false" || *value == "0") return false;
    throw pool::ServiceError::invalid_argument(std::string(name), "must be true or false");
}

std::optional<std::uint64_t> Query::get_uint(std::string_view name, std::uint64_t min,
                                             std::uint64_t max) const {
    const auto value = get(name);
    if (!value) return std::nullopt;
    const auto number = parse_uint(*value);
    if (!number || *number < min || *number > max) {
        throw pool::ServiceError::invalid_argument(
            std::string(name),
            "must be an integer between " + std::to_string(min) + " and " + std::to_string(max));
    }
    return number;
}

std::optional<std::uint64_t> parse_uint(std::string_view text) noexcept {
    if (text.empty() || text.size() > 20) return std::nullopt;
    std::uint64_t value = 0;
    const auto* end = text.data() + text.size();
    const auto [ptr, ec] = std::from_chars(text.data(), end, value);
    if (ec != std::errc{} || ptr != end) return std::nullopt;
    return value;
}

}  // namespace forkvm::server
