#include "pool/host_memory.hpp"

#include <charconv>
#include <fstream>
#include <sstream>
#include <string>

namespace forkvm::pool {

std::optional<std::uint64_t> parse_mem_available(std::string_view meminfo) {
    constexpr std::string_view key = "MemAvailable:";
    std::size_t at = 0;
    while ((at = meminfo.find(key, at)) != std::string_view::npos) {
        if (at == 0 || meminfo[at - 1] == '\n') break;
        at += key.size();
    }
    if (at == std::string_view::npos) return std::nullopt;
    std::string_view rest = meminfo.substr(at + key.size());
    rest = rest.substr(0, rest.find('\n'));
    const auto first = rest.find_first_not_of(' ');
    if (first == std::string_view::npos) return std::nullopt;
    rest.remove_prefix(first);
    std::uint64_t kib = 0;
    const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), kib);
    if (ec != std::errc() || kib > (UINT64_MAX >> 10U)) return std::nullopt;
    const std::string_view unit(end, static_cast<std::size_t>(rest.data() + rest.size() - end));
    if (unit != " kB") return std::nullopt;
    return kib << 10U;
}

std::optional<std::uint64_t> host_mem_available() {
    std::ifstream in("/proc/meminfo");
    if (!in) return std::nullopt;
    std::stringstream text;
    text << in.rdbuf();
    return parse_mem_available(text.str());
}

}  // namespace forkvm::pool
