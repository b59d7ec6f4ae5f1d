#pragma once
// "Did you mean ...?" for unknown keys, variables and flags.

#include <optional>
#include <span>
#include <string_view>

namespace forkvm::config {

// The candidate closest to word by edit distance, if it is close enough to be
// a plausible typo (a few edits, scaled with length). Cost is bounded: words
// longer than 64 characters never match.
std::optional<std::string_view> closest_match(std::string_view word,
                                              std::span<const std::string_view> candidates);

}  // namespace forkvm::config
