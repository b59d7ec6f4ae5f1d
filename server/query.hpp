#pragma once
// Request targets: splitting "/path?query", percent-decoding, and typed
// access to query parameters. Bad input throws ServiceError(invalid_argument)
// naming the parameter, so handlers never see half-decoded strings.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace forkvm::server {

struct Target {
    std::string_view path;
    std::string_view query;  // without the '?'
};

Target split_target(std::string_view target) noexcept;

// %XX escapes (and '+' as space when plus_as_space). nullopt for a bad escape.
std::optional<std::string> percent_decode(std::string_view text, bool plus_as_space);

class Query {
public:
    // Throws invalid_argument (field "query" or the parameter's name) on a bad escape.
    static Query parse(std::string_view query);

    // The single value of `name`; throws invalid_argument when it appears twice.
    std::optional<std::string> get(std::string_view name) const;
    std::vector<std::string> all(std::string_view name) const;
    bool has(std::string_view name) const;

    // Typed accessors: nullopt when absent, invalid_argument (field = name) when malformed.
    std::optional<bool> get_bool(std::string_view name) const;
    std::optional<std::uint64_t> get_uint(std::string_view name, std::uint64_t min, std::uint64_t max) const;

    const std::vector<std::pair<std::string, std::string>>& params() const noexcept { return params_; }

private:
    std::vector<std::pair<std::string, std::string>> params_;
};

// Unsigned decimal, no sign, no spaces; nullopt on overflow or junk.
std::optional<std::uint64_t> parse_uint(std::string_view text) noexcept;

}  // namespace forkvm::server
