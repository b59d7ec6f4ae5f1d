#pragma once
// Accounts from /etc/passwd and /etc/group, parsed by hand: getpwnam & co.
// need NSS, which a static binary cannot load (busybox system, flat files).

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forkvm::agent {

struct UserInfo {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
    std::string home;
    std::string shell;
    std::vector<gid_t> groups;  // supplementary groups, primary gid included
};

// Parses one passwd line "name:pw:uid:gid:gecos:home:shell"; nullopt if the
// line is malformed.
[[nodiscard]] std::optional<UserInfo> parse_passwd_line(std::string_view line);

// Looks `name` up in the passwd file, then collects its groups from the group
// file ("name:pw:gid:member,member"). nullopt if the user is unknown or the
// passwd file is unreadable; a missing group file just means no extra groups.
[[nodiscard]] std::optional<UserInfo> lookup_user(std::string_view name, const std::string& passwd_path,
                                                  const std::string& group_path);

}  // namespace forkvm::agent
