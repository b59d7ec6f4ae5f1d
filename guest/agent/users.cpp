#include "guest/agent/users.hpp"

#include <algorithm>
#include <charconv>
#include <fstream>

namespace forkvm::agent {
namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
    std::vector<std::string_view> out;
    std::size_t start = 0;
    while (true) {
        const std::size_t pos = s.find(sep, start);
        if (pos == std::string_view::npos) {
            out.push_back(s.substr(start));
            return out;
        }
        out.push_back(s.substr(start, pos - start));
        start = pos + 1;
    }
}

std::optional<unsigned> parse_id(std::string_view s) {
    unsigned v = 0;
    const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || ptr != s.data() + s.size() || s.empty()) return std::nullopt;
    return v;
}

}  // namespace

std::optional<UserInfo> parse_passwd_line(std::string_view line) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const auto f = split(line, ':');
    if (f.size() != 7 || f[0].empty()) return std::nullopt;
    const auto uid = parse_id(f[2]);
    const auto gid = parse_id(f[3]);
    if (!uid || !gid) return std::nullopt;
    UserInfo u;
    u.name = std::string(f[0]);
    u.uid = static_cast<uid_t>(*uid);
    u.gid = static_cast<gid_t>(*gid);
    u.home = f[5].empty() ? std::string("/") : std::string(f[5]);
    u.shell = std::string(f[6]);
    return u;
}

std::optional<UserInfo> lookup_user(std::string_view name, const std::string& passwd_path,
                                    const std::string& group_path) {
    if (name.empty()) return std::nullopt;
    std::ifstream passwd(passwd_path);
    if (!passwd) return std::nullopt;
    std::optional<UserInfo> user;
    for (std::string line; std::getline(passwd, line);) {
        auto u = parse_passwd_line(line);
        if (u && u->name == name) {
            user = std::move(u);
            break;
        }
    }
    if (!user) return std::nullopt;
    user->groups.push_back(user->gid);
    std::ifstream group(group_path);
    for (std::string line; group && std::getline(group, line);) {
        std::string_view l(line);
        if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
        const auto f = split(l, ':');
        if (f.size() != 4) continue;
        const auto gid = parse_id(f[2]);
        if (!gid) continue;
        for (const auto member : split(f[3], ',')) {
            if (member == name) {
                const auto g = static_cast<gid_t>(*gid);
                if (std::find(user->groups.begin(), user->groups.end(), g) == user->groups.end()) {
                    user->groups.push_back(g);
                }
                break;
            }
        }
    }
    return user;
}

}  // namespace forkvm::agent
