#include "guest/agent/spawn.hpp"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>

namespace forkvm::agent {
namespace {

// What the child reports through the status pipe before _exit.
enum class Stage : int { setup = 1, user = 2, chdir = 3 };
struct ChildStatus {
    int stage = 0;
    int err = 0;
};

void write_all(int fd, const void* data, std::size_t len) {
    const auto* p = static_cast<const char*>(data);
    while (len > 0) {
        const ssize_t n = ::write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += n;
        len -= static_cast<std::size_t>(n);
    }
}

[[noreturn]] void child_fail(int status_fd, Stage stage, int err) {
    const ChildStatus st{static_cast<int>(stage), err};
    write_all(status_fd, &st, sizeof st);
    ::_exit(127);
}

void close_from(unsigned first) {
#ifdef SYS_close_range
    if (::syscall(SYS_close_range, first, ~0U, 0U) == 0) return;
#endif
    const long max = ::sysconf(_SC_OPEN_MAX);
    for (long fd = first; fd < (max > 0 ? max : 1024); ++fd) ::close(static_cast<int>(fd));
}

std::vector<char*> c_strings(const std::vector<std::string>& v) {
    std::vector<char*> out;
    out.reserve(v.size() + 1);
    for (const auto& s : v) out.push_back(const_cast<char*>(s.c_str()));  // NOLINT: execve's signature
    out.push_back(nullptr);
    return out;
}

bool set_nonblock(int fd) {
    const int flags = ::fcntl(fd, F_GETFL);
    return flags >= 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0;
}

}  // namespace

std::optional<std::string> env_value(const std::vector<std::string>& env, const std::string& key) {
    std::optional<std::string> found;
    for (const auto& kv : env) {
        if (kv.size() > key.size() && kv.compare(0, key.size(), key) == 0 && kv[key.size()] == '=') {
            found = kv.substr(key.size() + 1);
        }
    }
    return found;
}

std::vector<std::string> build_env(const std::vector<std::string>& requested, const UserInfo& user,
                                   const std::vector<std::pair<std::string, std::string>>& extra_defaults) {
    std::vector<std::string> out;
    // Keep the last value of each key, in first-seen order.
    for (const auto& kv : requested) {
        const std::size_t eq = kv.find('=');
        const std::string_view key(kv.data(), eq == std::string::npos ? kv.size() : eq);
        bool replaced = false;
        for (auto& existing : out) {
            if (existing.size() > key.size() && existing.compare(0, key.size(), key) == 0 &&
                existing[key.size()] == '=') {
                existing = kv;
                replaced = true;
                break;
            }
        }
        if (!replaced) out.push_back(kv);
    }
    const auto add_default = [&out](const std::string& key, const std::string& value) {
        for (const auto& kv : out) {
            if (kv.size() > key.size() && kv.compare(0, key.size(), key) == 0 && kv[key.size()] == '=')
                return;
        }
        out.push_back(key + "=" + value);
    };
    add_default("PATH", kDefaultPath);
    add_default("HOME", user.home.empty() ? std::string("/") : user.home);
    add_default("USER", user.name);
    add_default("LOGNAME", user.name);
    add_default("SHELL", "/bin/sh");
    add_default("TERM", "dumb");
    for (const auto& [key, value] : extra_defaults) add_default(key, value);
    return out;
}

std::optional<std::string> resolve_executable(const std::string& argv0, const std::string& path) {
    if (argv0.find('/') != std::string::npos) return argv0;
    if (argv0.empty()) return std::nullopt;
    std::size_t start = 0;
    while (start <= path.size()) {
        std::size_t end = path.find(':', start);
        if (end == std::string::npos) end = path.size();
        const std::string dir = path.substr(start, end - start);
        start = end + 1;
        if (dir.empty()) continue;
        std::string candidate = dir + "/" + argv0;
        struct stat st {};
        if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0111U) != 0) {
            return candidate;
        }
    }
    return std::nullopt;
}

std::variant<Spawned, proto::Error> spawn_process(const SpawnRequest& req) {
    int in[2];
    int out[2];
    int err[2];
    int status[2];
    if (::pipe2(in, O_CLOEXEC) != 0) return proto::Error{proto::error_code_from_errno(errno), errno, "pipe"};
    UniqueFd in_r(in[0]), in_w(in[1]);
    if (::pipe2(out, O_CLOEXEC) != 0) return proto::Error{proto::error_code_from_errno(errno), errno, "pipe"};
    UniqueFd out_r(out[0]), out_w(out[1]);
    if (::pipe2(err, O_CLOEXEC) != 0) return proto::Error{proto::error_code_from_errno(errno), errno, "pipe"};
    UniqueFd err_r(err[0]), err_w(err[1]);
    if (::pipe2(status, O_CLOEXEC) != 0)
        return proto::Error{proto::error_code_from_errno(errno), errno, "pipe"};
    UniqueFd status_r(status[0]), status_w(status[1]);

    // Everything the child touches is built before fork.
    std::vector<char*> argv = c_strings(req.argv);
    std::vector<char*> envp = c_strings(req.env);
    const std::string home = req.user.home.empty() ? std::string("/") : req.user.home;
    const char* exe = req.executable.empty() ? nullptr : req.executable.c_str();
    const std::string not_found = "forkvm-agent: " + req.argv[0] + ": not found\n";
    const std::string cannot_exec = "forkvm-agent: " + req.argv[0] + ": cannot execute: ";
    const std::vector<gid_t>& groups = req.user.groups;

    const pid_t pid = ::fork();
    if (pid < 0) return proto::Error{proto::error_code_from_errno(errno), errno, "fork"};
    if (pid == 0) {
        const int sfd = status_w.get();
        if (::setsid() < 0) child_fail(sfd, Stage::setup, errno);
        // serve() keeps fds 0..2 open, so the pipe ends are >= 3 and dup2
        // always creates a fresh (non-CLOEXEC) descriptor.
        if (::dup2(in_r.get(), 0) < 0 || ::dup2(out_w.get(), 1) < 0 || ::dup2(err_w.get(), 2) < 0) {
            child_fail(sfd, Stage::setup, errno);
        }
        if (req.switch_user) {
            if (::setgroups(groups.size(), groups.data()) != 0) child_fail(sfd, Stage::user, errno);
            if (::setgid(req.user.gid) != 0) child_fail(sfd, Stage::user, errno);
            if (::setuid(req.user.uid) != 0) child_fail(sfd, Stage::user, errno);
        }
        // After the switch, so the user must be able to enter the directory.
        if (!req.cwd.empty()) {
            if (::chdir(req.cwd.c_str()) != 0) child_fail(sfd, Stage::chdir, errno);
        } else if (::chdir(home.c_str()) != 0) {
            (void)::chdir("/");
        }
        // Keep only 0..2 and the status pipe (CLOEXEC: closes on execve).
        if (::dup2(sfd, 3) < 0 || ::fcntl(3, F_SETFD, FD_CLOEXEC) != 0) child_fail(sfd, Stage::setup, errno);
        close_from(4);
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        for (int sig = 1; sig < NSIG; ++sig) (void)::sigaction(sig, &dfl, nullptr);
        sigset_t none;
        sigemptyset(&none);
        (void)::sigprocmask(SIG_SETMASK, &none, nullptr);
        if (exe == nullptr) {
            write_all(2, not_found.data(), not_found.size());
            ::_exit(127);
        }
        ::execve(exe, argv.data(), envp.data());
        const int e = errno;
        if (e == ENOENT) {
            write_all(2, not_found.data(), not_found.size());
            ::_exit(127);
        }
        const char* why = std::strerror(e);
        write_all(2, cannot_exec.data(), cannot_exec.size());
        write_all(2, why, std::strlen(why));
        write_all(2, "\n", 1);
        ::_exit(126);
    }

    // Parent: wait until the child has execed (EOF) or reported a failure.
    status_w.reset();
    in_r.reset();
    out_w.reset();
    err_w.reset();
    ChildStatus st{};
    std::size_t got = 0;
    while (got < sizeof st) {
        const ssize_t n = ::read(status_r.get(), reinterpret_cast<char*>(&st) + got, sizeof st - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += static_cast<std::size_t>(n);
    }
    if (got == sizeof st) {
        int wstatus = 0;
        while (::waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
        }
        const auto stage = static_cast<Stage>(st.stage);
        if (stage == Stage::chdir) {
            return proto::Error{proto::error_code_from_errno(st.err), st.err,
                                "chdir " + req.cwd + ": " + std::strerror(st.err)};
        }
        if (stage == Stage::user) {
            return proto::Error{proto::error_code_from_errno(st.err), st.err,
                                "switch to user " + req.user.name + ": " + std::strerror(st.err)};
        }
        return proto::Error{proto::ErrorCode::internal, st.err,
                            std::string("exec set-up: ") + std::strerror(st.err)};
    }
    if (!req.has_stdin) in_w.reset();
    // Cannot fail on fresh pipe fds.
    if (in_w) (void)set_nonblock(in_w.get());
    (void)set_nonblock(out_r.get());
    (void)set_nonblock(err_r.get());
    Spawned s;
    s.pid = pid;
    s.stdin_w = std::move(in_w);
    s.stdout_r = std::move(out_r);
    s.stderr_r = std::move(err_r);
    return s;
}

}  // namespace forkvm::agent
