// Path normalization for path-prefix rules. A rule "/v1/" must not be
// passed by "/v1/../admin", "/v1/%2e%2e/admin" or "//v1/..//admin", so rules
// match against one canonical form, and paths that servers might read in
// more than one way are refused instead of guessed at.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace forkvm::http_proxy {

inline constexpr std::size_t kMaxPathLength = 8192;

struct PathResult {
    std::optional<std::string> path;  // normalized, no query
    std::string error;

    explicit operator bool() const { return path.has_value(); }
};

// Normalizes the path of a request target (path plus optional "?query"):
//  1. The query (from the first '?') is dropped; rules never see it. A '#'
//     (fragment) is an error: clients do not send one.
//  2. The path must start with '/' and hold only URI characters; controls,
//     space, non-ASCII, '\' and ';' are errors (some servers read '\' as
//     '/' and "..;" as ".." — Tomcat — so they cannot be normalized safely).
//  3. Percent-escapes of unreserved characters (A-Z a-z 0-9 - . _ ~) are
//     decoded; other escapes are kept with upper-case hex. Escapes of '/',
//     '\', '%', ';' and of controls or NUL, and malformed escapes, are errors
//     (servers disagree on them; "%25" would allow double-decoding tricks).
//  4. Duplicate slashes collapse; "." segments are removed; ".." removes
//     the previous segment, and ".." above the root is an error. A path that
//     ended in "/", "/." or "/.." keeps a trailing '/'.
// Result examples: "/v1/../admin" -> "/admin", "/a//b/./c/" -> "/a/b/c/",
// "/%7Euser" -> "/~user".
PathResult normalize_path(std::string_view target);

// Whether a normalized path falls under a normalized rule prefix. Matching
// is by whole segments: "/v1" matches "/v1" and "/v1/x" but not "/v1admin";
// "/v1/" matches "/v1/" and "/v1/x" but not "/v1".
bool path_has_prefix(std::string_view path, std::string_view prefix);

}  // namespace forkvm::http_proxy
