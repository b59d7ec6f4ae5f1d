#include "config/suggest.hpp"

#include <algorithm>
#include <array>
#include <numeric>

namespace forkvm::config {

namespace {

constexpr std::size_t max_word = 64;

char fold(char c) {
    if (c >= 'A' && c <= 'Z') return static_cast<char>(c - 'A' + 'a');
    if (c == '-' || c == '.') return '_';  // "--max-warm" vs "max_warm" style slips are free
    return c;
}

// Levenshtein distance over case- and separator-folded characters.
std::size_t edit_distance(std::string_view a, std::string_view b) {
    std::array<std::size_t, max_word + 1> row{};
    std::iota(row.begin(), row.begin() + static_cast<std::ptrdiff_t>(b.size() + 1), std::size_t{0});
    for (std::size_t i = 1; i <= a.size(); ++i) {
        std::size_t diagonal = row[0];
        row[0] = i;
        for (std::size_t j = 1; j <= b.size(); ++j) {
            const std::size_t above = row[j];
            const std::size_t substitute = diagonal + (fold(a[i - 1]) == fold(b[j - 1]) ? 0 : 1);
            row[j] = std::min({above + 1, row[j - 1] + 1, substitute});
            diagonal = above;
        }
    }
    return row[b.size()];
}

}  // namespace

std::optional<std::string_view> closest_match(std::string_view word,
                                              std::span<const std::string_view> candidates) {
    if (word.empty() || word.size() > max_word) return std::nullopt;
    const std::size_t limit = std::max<std::size_t>(2, word.size() / 4);
    std::optional<std::string_view> best;
    std::size_t best_distance = limit + 1;
    for (std::string_view candidate : candidates) {
        if (candidate.size() > max_word) continue;
        const std::size_t d = edit_distance(word, candidate);
        if (d < best_distance) {
            best_distance = d;
            best = candidate;
        }
    }
    return best;
}

}  // namespace forkvm::config
