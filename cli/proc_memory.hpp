#pragma once
// A process's memory as the kernel accounts it, from /proc/<pid>/smaps_rollup.
// Pss (proportional set size) splits every shared page over its sharers, so
// the Pss of a zygote and its copy-on-write clones adds up to the memory they
// really hold; Rss counts shared pages once per process. Header-only so that
// the unit tests can include it (cli/ is built into the executable only).

#include <sys/types.h>

#include <cstdint>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>

namespace forkvm::cli {

struct ProcMemory {
    std::uint64_t pss_kb = 0;
    std::uint64_t rss_kb = 0;
};

namespace detail {

// The number of a "Name:   1234 kB" line, if `line` is that field.
inline std::optional<std::uint64_t> smaps_field_kb(std::string_view line, std::string_view name) {
    if (line.size() <= name.size() || line.substr(0, name.size()) != name || line[name.size()] != ':') {
        return std::nullopt;
    }
    std::string_view rest = line.substr(name.size() + 1);
    while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
    std::uint64_t value = 0;
    std::size_t digits = 0;
    for (; digits < rest.size() && rest[digits] >= '0' && rest[digits] <= '9'; ++digits) {
        if (digits >= 19) return std::nullopt;  // would overflow: not a real smaps line
        value = value * 10 + static_cast<std::uint64_t>(rest[digits] - '0');
    }
    if (digits == 0 || rest.substr(digits) != " kB") return std::nullopt;
    return value;
}

}  // namespace detail

// Parses the text of a smaps_rollup file; nullopt unless it has both a Pss and
// an Rss line.
[[nodiscard]] inline std::optional<ProcMemory> parse_smaps_rollup(std::string_view text) {
    std::optional<std::uint64_t> pss;
    std::optional<std::uint64_t> rss;
    while (!text.empty()) {
        const auto eol = text.find('\n');
        const std::string_view line = text.substr(0, eol);
        text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
        if (auto v = detail::smaps_field_kb(line, "Pss")) pss = v;
        if (auto v = detail::smaps_field_kb(line, "Rss")) rss = v;
    }
    if (!pss || !rss) return std::nullopt;
    return ProcMemory{*pss, *rss};
}

// nullopt if the process is gone or the file cannot be read or parsed.
[[nodiscard]] inline std::optional<ProcMemory> read_proc_memory(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
    if (!in) return std::nullopt;
    std::ostringstream text;
    text << in.rdbuf();
    return parse_smaps_rollup(text.str());
}

}  // namespace forkvm::cli
