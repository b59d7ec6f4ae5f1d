#pragma once
// Starting one exec's process: environment, PATH lookup, fork and the
// child's set-up before execve. Everything the child needs is prepared in
// the parent, so between fork and execve the child only makes system calls.

#include <sys/types.h>

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "guest/agent/users.hpp"
#include "guest/protocol/messages.hpp"
#include "vmm/unique_fd.hpp"  // header-only, std-only: shared with the host

namespace forkvm::agent {

inline constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// The child's environment: exactly `requested` ("K=V"; a later entry wins
// over an earlier one with the same K), plus these defaults for any K that is
// absent: PATH (kDefaultPath), HOME (from passwd), USER and LOGNAME (the
// user's name), SHELL=/bin/sh, TERM=dumb, then `extra_defaults` (the egress
// proxy's variables), each again only if absent.
[[nodiscard]] std::vector<std::string> build_env(
    const std::vector<std::string>& requested, const UserInfo& user,
    const std::vector<std::pair<std::string, std::string>>& extra_defaults = {});

// The value of K in an env list ("K=V"), if present.
[[nodiscard]] std::optional<std::string> env_value(const std::vector<std::string>& env,
                                                   const std::string& key);

// Resolves argv0 like a shell: a name with a '/' is used as is; otherwise the
// first executable regular file in the ':'-separated `path` list (an empty
// entry is the current directory... which is the child's cwd, so it is
// skipped here). nullopt if none.
[[nodiscard]] std::optional<std::string> resolve_executable(const std::string& argv0,
                                                            const std::string& path);

struct SpawnRequest {
    std::vector<std::string> argv;  // argv[0] as given (the program's own argv[0])
    std::string executable;         // resolved path, or "" if argv[0] was not found
    std::vector<std::string> env;
    std::string cwd;  // "" = the user's home (falling back to "/")
    UserInfo user;
    bool switch_user = false;  // setgroups/setgid/setuid to `user`
    bool has_stdin = false;    // false: stdin is a pipe already at EOF
};

struct Spawned {
    pid_t pid = -1;     // also the process group id (the child calls setsid)
    UniqueFd stdin_w;   // non-blocking; invalid if !has_stdin
    UniqueFd stdout_r;  // non-blocking
    UniqueFd stderr_r;  // non-blocking
};

// Forks and execs. Returns the child once it has passed setsid, the user
// switch and chdir (it reports a failure of those through a CLOEXEC status
// pipe, and the parent turns it into an Error: chdir → not_found etc., user
// switch → permission_denied). A missing or non-executable program is not an
// Error: like a shell, the child writes "forkvm-agent: NAME: not found" (or
// the execve error) to its stderr and exits 127 (not found) or 126.
[[nodiscard]] std::variant<Spawned, proto::Error> spawn_process(const SpawnRequest& req);

}  // namespace forkvm::agent
