#include "guest/agent/server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "guest/agent/file_ops.hpp"
#include "guest/agent/hygiene.hpp"
#include "guest/agent/outbox.hpp"
#include "guest/agent/proxy_streams.hpp"
#include "guest/agent/spawn.hpp"
#include "guest/agent/users.hpp"
#include "guest/protocol/messages.hpp"
#include "vmm/unique_fd.hpp"  // header-only, std-only: shared with the host

namespace forkvm::agent {
namespace {

using Clock = std::chrono::steady_clock;
using proto::ErrorCode;

// How long the agent waits for a killed process group to disappear before
// reporting ExecExit anyway (members stuck in uninterruptible sleep).
constexpr auto kKillWait = std::chrono::milliseconds(500);
// Failed write transfers whose late FileData/WriteFileEnd frames are dropped
// silently instead of each being answered with an Error.
constexpr std::size_t kDeadWriteIds = 64;
constexpr std::size_t kFlushBurst = 16 * 1024;  // bytes written between two polls of the channel
constexpr std::size_t kChannelReadSize = 64 * 1024;
constexpr std::size_t kDiscardReadSize = 64 * 1024;
constexpr int kMaxResyncLogs = 8;

proto::Error error(ErrorCode code, std::string message, int err = 0) {
    return proto::Error{code, err, std::move(message)};
}

std::uint64_t add_saturating(std::uint64_t a, std::uint64_t b) {
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

std::uint64_t monotonic_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000U + static_cast<std::uint64_t>(ts.tv_nsec);
}

struct OutStream {
    UniqueFd fd;  // closed at EOF
    proto::StreamId id = proto::StreamId::exec_stdout;
    std::uint64_t credit = 0;
    std::uint64_t cap = 0;
    std::uint64_t kept = 0;  // bytes sent to the host (<= cap)
    bool truncated = false;
};

struct Exec {
    std::uint32_t id = 0;
    pid_t pid = -1;  // also the process group id
    OutStream out;
    OutStream err;
    UniqueFd in;
    proto::Bytes stdin_data;
    std::size_t stdin_off = 0;
    Clock::time_point start;
    std::optional<Clock::time_point> deadline;  // timeout
    bool killed = false;                        // timed out or cancelled: group SIGKILLed
    bool timed_out = false;
    bool exited = false;  // the leader has been reaped
    int wait_status = 0;
    Clock::time_point exit_time;
    std::uint64_t duration_us = 0;
};

struct ReadXfer {
    UniqueFd fd;
    std::uint64_t credit = 0;
    std::optional<std::uint64_t> remaining;  // nullopt: up to EOF
    std::uint64_t total = 0;
    std::uint64_t pos = 0;
    bool eof_checked = false;  // at zero credit, fstat said "not at EOF yet"
};

struct WriteXfer {
    UniqueFd fd;
    std::string path;
    std::uint64_t total_size = 0;
    std::uint64_t received = 0;
    std::uint64_t outstanding = 0;  // credit granted to the host, not yet used
};

class Server {
public:
    Server(int channel_fd, UniqueFd sigfd, const Options& options, MailboxWatcher& mailbox)
        : fd_(channel_fd),
          opt_(options),
          mailbox_(mailbox),
          decoder_(options.max_payload),
          sigfd_(std::move(sigfd)),
          scratch_(kDiscardReadSize) {}

    int run();

private:
    // Loop pieces.
    void build_poll_set(std::vector<pollfd>& fds);
    int poll_timeout_ms() const;
    bool read_channel();  // false at EOF or on a read error
    void dispatch(proto::Frame&& frame);
    void reap_children();
    void drain_signalfd();
    void pump_exec_stream(Exec& e, OutStream& s);
    void pump_stdin(Exec& e);
    void pump_reads();
    void check_timers();
    void finish_ready_execs();
    bool exec_done(Exec& e);
    void finish_exec(Exec& e);
    void kill_group(Exec& e);
    void shutdown();

    // Requests.
    [[nodiscard]] bool id_in_use(std::uint32_t id) const {
        return execs_.count(id) != 0 || reads_.count(id) != 0 || writes_.count(id) != 0;
    }
    [[nodiscard]] bool check_new_request(std::uint32_t id);
    void on_exec_start(std::uint32_t id, const proto::ExecStart& req);
    void on_credit(std::uint32_t id, const proto::Credit& c);
    void on_cancel(std::uint32_t id);
    void on_read_file(std::uint32_t id, const proto::ReadFile& req);
    void on_write_begin(std::uint32_t id, const proto::WriteFileBegin& req);
    void on_file_data(std::uint32_t id, const proto::FileData& d);
    void on_write_end(std::uint32_t id);
    void abort_write(std::uint32_t id, const proto::Error& e);
    void reply(std::uint32_t id, const proto::Message& m);

    int fd_;
    const Options& opt_;
    MailboxWatcher& mailbox_;
    proto::FrameDecoder decoder_;
    Outbox outbox_;
    ProxyStreams proxy_{opt_, outbox_};
    UniqueFd sigfd_;
    std::map<std::uint32_t, Exec> execs_;
    std::map<std::uint32_t, ReadXfer> reads_;
    std::map<std::uint32_t, WriteXfer> writes_;
    std::deque<std::uint32_t> dead_writes_;
    std::vector<std::uint8_t> scratch_;
    bool channel_eof_ = false;
    bool channel_failed_ = false;
    std::uint64_t resyncs_ = 0;  // decode errors skipped (resyncs)
    int logged_resyncs_ = 0;
    bool in_noise_ = false;
};

void Server::reply(std::uint32_t id, const proto::Message& m) {
    std::visit([&](const auto& msg) { outbox_.control(id, msg); }, m);
}

bool Server::check_new_request(std::uint32_t id) {
    if (id == 0) {
        outbox_.control(0, error(ErrorCode::invalid_argument, "request id 0 is reserved"));
        return false;
    }
    if (id_in_use(id)) {
        outbox_.control(id, error(ErrorCode::invalid_argument, "request id already in use"));
        return false;
    }
    return true;
}

// ---------------------------------------------------------------- exec ----

void Server::on_exec_start(std::uint32_t id, const proto::ExecStart& req) {
    if (!check_new_request(id)) return;
    if (req.argv.empty() || req.argv[0].empty()) {
        return outbox_.control(id, error(ErrorCode::invalid_argument, "empty argv"));
    }
    std::size_t total = 0;
    for (const auto& a : req.argv) {
        if (a.find('\0') != std::string::npos) {
            return outbox_.control(id, error(ErrorCode::invalid_argument, "argv contains a NUL byte"));
        }
        total += a.size() + 1;
    }
    for (const auto& kv : req.env) {
        const std::size_t eq = kv.find('=');
        if (eq == std::string::npos || eq == 0 || kv.find('\0') != std::string::npos) {
            return outbox_.control(id, error(ErrorCode::invalid_argument, "env entry is not K=V"));
        }
        total += kv.size() + 1;
    }
    if (total > opt_.max_exec_arg_bytes) {
        return outbox_.control(id, error(ErrorCode::too_large, "argv and env too large", E2BIG));
    }
    if (!req.cwd.empty() && (req.cwd.find('\0') != std::string::npos || req.cwd.front() != '/')) {
        return outbox_.control(id, error(ErrorCode::invalid_argument, "cwd must be an absolute path"));
    }
    if (execs_.size() >= opt_.max_execs) {
        return outbox_.control(id, error(ErrorCode::busy, "too many running execs"));
    }
    const std::string& user_name = req.user.empty() ? opt_.default_user : req.user;
    if (user_name.find('\0') != std::string::npos) {
        return outbox_.control(id, error(ErrorCode::invalid_argument, "user contains a NUL byte"));
    }
    auto user = lookup_user(user_name, opt_.passwd_path, opt_.group_path);
    if (!user) return outbox_.control(id, error(ErrorCode::not_found, "unknown user " + user_name));

    SpawnRequest sp;
    sp.argv = req.argv;
    sp.env = build_env(req.env, *user,
                       proxy_.listening() ? proxy_environment(opt_.proxy_port)
                                          : std::vector<std::pair<std::string, std::string>>{});
    sp.executable = resolve_executable(req.argv[0], env_value(sp.env, "PATH").value_or(kDefaultPath))
                        .value_or(std::string());
    sp.cwd = req.cwd;
    sp.switch_user = ::geteuid() != user->uid;
    sp.user = std::move(*user);
    sp.has_stdin = !req.stdin_data.empty();

    const auto start = Clock::now();
    auto spawned = spawn_process(sp);
    if (auto* e = std::get_if<proto::Error>(&spawned)) return outbox_.control(id, *e);
    auto& s = std::get<Spawned>(spawned);

    Exec& e = execs_[id];
    e.id = id;
    e.pid = s.pid;
    e.start = start;
    e.out.fd = std::move(s.stdout_r);
    e.out.id = proto::StreamId::exec_stdout;
    e.out.credit = req.initial_credit;
    e.out.cap = req.stdout_cap;
    e.err.fd = std::move(s.stderr_r);
    e.err.id = proto::StreamId::exec_stderr;
    e.err.credit = req.initial_credit;
    e.err.cap = req.stderr_cap;
    e.in = std::move(s.stdin_w);
    if (e.in) e.stdin_data = req.stdin_data;
    if (req.timeout_ms != 0) e.deadline = start + std::chrono::milliseconds(req.timeout_ms);
    outbox_.control(id, proto::ExecStarted{static_cast<std::uint32_t>(s.pid)});
}

void Server::pump_exec_stream(Exec& e, OutStream& s) {
    if (s.kept >= s.cap) {
        // Past the cap: read and discard, so the child never blocks on it.
        const ssize_t n = ::read(s.fd.get(), scratch_.data(), scratch_.size());
        if (n > 0) s.truncated = true;
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) s.fd.reset();
        return;
    }
    const std::uint64_t want = std::min<std::uint64_t>({opt_.bulk_chunk, s.credit, s.cap - s.kept});
    if (want == 0) return;
    proto::ExecOutput msg;
    msg.stream = s.id;
    msg.data.resize(static_cast<std::size_t>(want));
    const ssize_t n = ::read(s.fd.get(), msg.data.data(), msg.data.size());
    if (n > 0) {
        msg.data.resize(static_cast<std::size_t>(n));
        s.credit -= static_cast<std::uint64_t>(n);
        s.kept += static_cast<std::uint64_t>(n);
        outbox_.bulk(e.id, msg);
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        s.fd.reset();
    }
}

void Server::pump_stdin(Exec& e) {
    while (e.stdin_off < e.stdin_data.size()) {
        const ssize_t n =
            ::write(e.in.get(), e.stdin_data.data() + e.stdin_off, e.stdin_data.size() - e.stdin_off);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return;
            break;  // EPIPE: the child does not read its stdin
        }
        e.stdin_off += static_cast<std::size_t>(n);
    }
    e.in.reset();
    e.stdin_data = proto::Bytes();
}

void Server::kill_group(Exec& e) {
    ::kill(-e.pid, SIGKILL);
    // In case the leader left its group; it is our child, so its pid is ours.
    if (!e.exited) ::kill(e.pid, SIGKILL);
    e.killed = true;
}

void Server::on_cancel(std::uint32_t id) {
    if (auto it = execs_.find(id); it != execs_.end()) {
        kill_group(it->second);
        it->second.deadline.reset();
        return;
    }
    if (auto it = reads_.find(id); it != reads_.end()) {
        outbox_.drop_bulk_for(id);
        reads_.erase(it);
        return outbox_.control(id, error(ErrorCode::cancelled, "read cancelled", ECANCELED));
    }
    if (writes_.count(id) != 0) {
        return abort_write(id, error(ErrorCode::cancelled, "write cancelled", ECANCELED));
    }
    // Unknown or finished: ignored (the request may have just finished).
}

void Server::reap_children() {
    while (true) {
        int status = 0;
        const pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0) {
            if (pid < 0 && errno == EINTR) continue;
            return;
        }
        for (auto& [id, e] : execs_) {
            if (e.pid == pid && !e.exited) {
                e.exited = true;
                e.wait_status = status;
                e.exit_time = Clock::now();
                e.duration_us = static_cast<std::uint64_t>(
                    std::chrono::duration_cast<std::chrono::microseconds>(e.exit_time - e.start).count());
                e.deadline.reset();
                break;
            }
        }
        // Unknown pids (orphans reparented to us) are just reaped.
    }
}

void Server::drain_signalfd() {
    signalfd_siginfo info{};
    while (::read(sigfd_.get(), &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
    }
}

void Server::check_timers() {
    const auto now = Clock::now();
    for (auto& [id, e] : execs_) {
        if (e.deadline && now >= *e.deadline && !e.exited) {
            e.timed_out = true;
            e.deadline.reset();
            kill_group(e);
        }
    }
}

// Whether `e` can be reported: the leader was reaped and its output drained,
// or the grace period after the leader's exit is over and the agent is not
// holding back buffered output for lack of credit.
bool Server::exec_done(Exec& e) {
    if (!e.exited) return false;
    if (!e.out.fd && !e.err.fd) return true;
    if (Clock::now() < e.exit_time + std::chrono::milliseconds(opt_.exit_grace_ms)) return false;
    for (OutStream* s : {&e.out, &e.err}) {
        if (!s->fd) continue;
        // Drain what is buffered now (bounded: a background writer may never stop).
        for (int i = 0; i < 16 && s->fd && (s->kept >= s->cap || s->credit > 0); ++i) {
            int avail = 0;
            if (::ioctl(s->fd.get(), FIONREAD, &avail) != 0 || avail <= 0) break;
            pump_exec_stream(e, *s);
        }
        if (!s->fd) continue;
        int avail = 0;
        if (s->kept < s->cap && s->credit == 0 && ::ioctl(s->fd.get(), FIONREAD, &avail) == 0 && avail > 0) {
            return false;  // the host still has to grant credit for this
        }
    }
    return true;
}

void Server::finish_exec(Exec& e) {
    e.out.fd.reset();
    e.err.fd.reset();
    e.in.reset();
    if (e.killed) {
        // No process of a killed exec may survive its ExecExit: kill the
        // group again (members forked since) and wait until it is gone,
        // reaping the orphans reparented to us.
        const auto until = Clock::now() + kKillWait;
        while (::kill(-e.pid, SIGKILL) == 0 && Clock::now() < until) {
            reap_children();
            ::usleep(1000);
        }
    }
    proto::ExecExit x;
    if (WIFEXITED(e.wait_status)) {
        x.exit_code = WEXITSTATUS(e.wait_status);
    } else if (WIFSIGNALED(e.wait_status)) {
        x.exit_code = -1;
        x.term_signal = WTERMSIG(e.wait_status);
    }
    x.timed_out = e.timed_out;
    x.stdout_truncated = e.out.truncated;
    x.stderr_truncated = e.err.truncated;
    x.duration_us = e.duration_us;
    outbox_.control(e.id, x);
}

void Server::finish_ready_execs() {
    for (auto it = execs_.begin(); it != execs_.end();) {
        if (exec_done(it->second)) {
            finish_exec(it->second);
            it = execs_.erase(it);
        } else {
            ++it;
        }
    }
}

void Server::on_credit(std::uint32_t id, const proto::Credit& c) {
    if (auto it = execs_.find(id); it != execs_.end()) {
        if (c.stream == proto::StreamId::file_data) {
            return outbox_.control(id, error(ErrorCode::invalid_argument, "file_data credit for an exec"));
        }
        OutStream& s = c.stream == proto::StreamId::exec_stdout ? it->second.out : it->second.err;
        s.credit = add_saturating(s.credit, c.bytes);
        return;
    }
    if (auto it = reads_.find(id); it != reads_.end()) {
        if (c.stream != proto::StreamId::file_data) {
            return outbox_.control(id, error(ErrorCode::invalid_argument, "exec credit for a read"));
        }
        it->second.credit = add_saturating(it->second.credit, c.bytes);
        it->second.eof_checked = false;
        return;
    }
    // A late credit for a finished request: ignored.
}

// --------------------------------------------------------------- files ----

void Server::on_read_file(std::uint32_t id, const proto::ReadFile& req) {
    if (!check_new_request(id)) return;
    if (auto e = check_path(req.path)) return outbox_.control(id, *e);
    UniqueFd fd(::open(req.path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!fd) return outbox_.control(id, errno_error(errno, "open", req.path));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return outbox_.control(id, errno_error(errno, "stat", req.path));
    if (S_ISDIR(st.st_mode)) return outbox_.control(id, errno_error(EISDIR, "read", req.path));
    if (!S_ISREG(st.st_mode)) {
        return outbox_.control(id, error(ErrorCode::unsupported, "not a regular file: " + req.path));
    }
    if (req.offset > static_cast<std::uint64_t>(INT64_MAX)) {
        return outbox_.control(id, error(ErrorCode::invalid_argument, "offset out of range"));
    }
    ReadXfer x;
    x.fd = std::move(fd);
    x.credit = req.initial_credit;
    if (req.max_bytes != 0) x.remaining = req.max_bytes;
    x.pos = req.offset;
    reads_.emplace(id, std::move(x));
}

void Server::pump_reads() {
    for (auto it = reads_.begin(); it != reads_.end();) {
        const std::uint32_t id = it->first;
        ReadXfer& x = it->second;
        std::optional<proto::Message> end;
        if (x.remaining && *x.remaining == 0) {
            end = proto::FileEnd{x.total, false};
        } else if (x.credit == 0) {
            // No credit: still finish a file that has been read to its end.
            struct stat st {};
            if (!x.eof_checked && ::fstat(x.fd.get(), &st) == 0) {
                if (x.pos >= static_cast<std::uint64_t>(st.st_size)) end = proto::FileEnd{x.total, true};
                x.eof_checked = true;
            }
        } else if (outbox_.bulk_bytes() < opt_.max_bulk_queue) {
            std::uint64_t want = std::min<std::uint64_t>(opt_.bulk_chunk, x.credit);
            if (x.remaining) want = std::min(want, *x.remaining);
            proto::FileData d;
            d.data.resize(static_cast<std::size_t>(want));
            const ssize_t n = ::pread(x.fd.get(), d.data.data(), d.data.size(), static_cast<off_t>(x.pos));
            if (n < 0) {
                if (errno != EINTR && errno != EAGAIN) end = errno_error(errno, "read", "");
            } else if (n == 0) {
                end = proto::FileEnd{x.total, true};
            } else {
                const auto got = static_cast<std::uint64_t>(n);
                d.data.resize(static_cast<std::size_t>(n));
                x.pos += got;
                x.total += got;
                x.credit -= got;
                if (x.remaining) *x.remaining -= got;
                x.eof_checked = false;
                outbox_.bulk(id, d);
            }
        }
        if (end) {
            reply(id, *end);
            it = reads_.erase(it);
        } else {
            ++it;
        }
    }
}

void Server::abort_write(std::uint32_t id, const proto::Error& e) {
    writes_.erase(id);
    dead_writes_.push_back(id);
    if (dead_writes_.size() > kDeadWriteIds) dead_writes_.pop_front();
    outbox_.control(id, e);
}

void Server::on_write_begin(std::uint32_t id, const proto::WriteFileBegin& req) {
    if (!check_new_request(id)) return;
    if (auto e = check_path(req.path)) return outbox_.control(id, *e);
    if (req.mode > 07777U)
        return outbox_.control(id, error(ErrorCode::invalid_argument, "mode out of range"));
    if (req.create_parents) {
        const std::size_t slash = req.path.find_last_of('/');
        if (slash > 0) {
            if (const int err = make_dirs(req.path.substr(0, slash), 0755); err != 0) {
                return outbox_.control(id, errno_error(err, "create parents of", req.path));
            }
        }
    }
    const int mode_flag = req.write_mode == proto::WriteMode::append ? O_APPEND : O_TRUNC;
    const int base = O_WRONLY | O_CLOEXEC | O_NOCTTY;
    // Create with O_EXCL first so the requested mode is applied (exactly,
    // whatever the umask) only to a file created here.
    bool created = true;
    UniqueFd fd(::open(req.path.c_str(), base | O_CREAT | O_EXCL, static_cast<mode_t>(req.mode)));
    if (!fd && errno == EEXIST) {
        created = false;
        fd.reset(::open(req.path.c_str(), base | mode_flag));
    }
    if (!fd) return outbox_.control(id, errno_error(errno, "open", req.path));
    if (created) (void)::fchmod(fd.get(), static_cast<mode_t>(req.mode));
    WriteXfer w;
    w.fd = std::move(fd);
    w.path = req.path;
    w.total_size = req.total_size;
    w.outstanding = std::min<std::uint64_t>(opt_.write_window, req.total_size);
    outbox_.control(id, proto::Credit{proto::StreamId::file_data, static_cast<std::uint32_t>(w.outstanding)});
    writes_.emplace(id, std::move(w));
}

void Server::on_file_data(std::uint32_t id, const proto::FileData& d) {
    auto it = writes_.find(id);
    if (it == writes_.end()) {
        if (std::find(dead_writes_.begin(), dead_writes_.end(), id) != dead_writes_.end()) return;
        return outbox_.control(id, error(ErrorCode::protocol, "file_data for no open write"));
    }
    WriteXfer& w = it->second;
    const auto n = static_cast<std::uint64_t>(d.data.size());
    if (n > w.total_size - w.received) {
        return abort_write(id, error(ErrorCode::too_large, "more data than total_size", EFBIG));
    }
    if (n > w.outstanding)
        return abort_write(id, error(ErrorCode::protocol, "file_data beyond the granted credit"));
    std::size_t off = 0;
    while (off < d.data.size()) {
        const ssize_t k = ::write(w.fd.get(), d.data.data() + off, d.data.size() - off);
        if (k < 0) {
            if (errno == EINTR) continue;
            return abort_write(id, errno_error(errno, "write", w.path));
        }
        off += static_cast<std::size_t>(k);
    }
    w.received += n;
    w.outstanding -= n;
    // Refill the window once half of it is used (or the last bytes are due).
    const std::uint64_t left = w.total_size - w.received;
    const std::uint64_t target = std::min<std::uint64_t>(opt_.write_window, left);
    if (target > w.outstanding && (w.outstanding * 2 <= opt_.write_window || target == left)) {
        const std::uint64_t grant = target - w.outstanding;
        w.outstanding = target;
        outbox_.control(id, proto::Credit{proto::StreamId::file_data, static_cast<std::uint32_t>(grant)});
    }
}

void Server::on_write_end(std::uint32_t id) {
    auto it = writes_.find(id);
    if (it == writes_.end()) {
        if (std::find(dead_writes_.begin(), dead_writes_.end(), id) != dead_writes_.end()) return;
        return outbox_.control(id, error(ErrorCode::protocol, "write_file_end for no open write"));
    }
    WriteXfer& w = it->second;
    if (w.received != w.total_size) {
        return abort_write(
            id, error(ErrorCode::invalid_argument, "received " + std::to_string(w.received) + " of " +
                                                       std::to_string(w.total_size) + " bytes"));
    }
    const int fd = w.fd.release();
    if (::close(fd) != 0 && errno != EINTR) return abort_write(id, errno_error(errno, "close", w.path));
    writes_.erase(it);
    outbox_.control(id, proto::Ok{});
}

// ------------------------------------------------------------ dispatch ----

void Server::dispatch(proto::Frame&& frame) {
    const std::uint32_t id = frame.request_id;
    auto decoded = proto::decode_any(frame);
    if (!decoded) {
        return outbox_.control(
            id, error(ErrorCode::protocol, std::string("undecodable ") +
                                               std::string(proto::message_type_name(frame.type)) + ": " +
                                               std::string(proto::proto_error_name(decoded.error()))));
    }
    const auto small = [&](auto&& run) {
        if (check_new_request(id)) reply(id, run());
    };
    std::visit(
        [&](const auto& m) {
            using M = std::decay_t<decltype(m)>;
            if constexpr (std::is_same_v<M, proto::Ping>) {
                if (id_in_use(id)) {
                    return outbox_.control(id,
                                           error(ErrorCode::invalid_argument, "request id already in use"));
                }
                outbox_.control(id, proto::Pong{m.nonce, monotonic_ns()});
            } else if constexpr (std::is_same_v<M, proto::ExecStart>) {
                on_exec_start(id, m);
            } else if constexpr (std::is_same_v<M, proto::Credit>) {
                on_credit(id, m);
            } else if constexpr (std::is_same_v<M, proto::Cancel>) {
                on_cancel(id);
            } else if constexpr (std::is_same_v<M, proto::ReadFile>) {
                on_read_file(id, m);
            } else if constexpr (std::is_same_v<M, proto::WriteFileBegin>) {
                on_write_begin(id, m);
            } else if constexpr (std::is_same_v<M, proto::FileData>) {
                on_file_data(id, m);
            } else if constexpr (std::is_same_v<M, proto::WriteFileEnd>) {
                on_write_end(id);
            } else if constexpr (std::is_same_v<M, proto::Stat>) {
                small([&] { return do_stat(m); });
            } else if constexpr (std::is_same_v<M, proto::ListDir>) {
                small([&] { return do_list_dir(m, opt_.max_dir_entries); });
            } else if constexpr (std::is_same_v<M, proto::Exists>) {
                small([&] { return do_exists(m); });
            } else if constexpr (std::is_same_v<M, proto::Remove>) {
                small([&] { return do_remove(m); });
            } else if constexpr (std::is_same_v<M, proto::Rename>) {
                small([&] { return do_rename(m); });
            } else if constexpr (std::is_same_v<M, proto::Mkdir>) {
                small([&] { return do_mkdir(m); });
            } else if constexpr (std::is_same_v<M, proto::ProxyCredit>) {
                proxy_.on_credit(id, m);
            } else if constexpr (std::is_same_v<M, proto::ProxyData>) {
                proxy_.on_data(id, proto::ProxyData(m));
            } else if constexpr (std::is_same_v<M, proto::ProxyClose>) {
                proxy_.on_close(id, m);
            } else {
                outbox_.control(id, error(ErrorCode::protocol,
                                          "unexpected " + std::string(proto::message_type_name(M::kType))));
            }
        },
        *decoded);
}

bool Server::read_channel() {
    std::uint8_t buf[kChannelReadSize];
    const ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n == 0) return false;
    if (n < 0) return errno == EAGAIN || errno == EINTR;
    proto::ByteSpan data(buf, static_cast<std::size_t>(n));
    bool mailbox_checked = false;
    while (!data.empty()) {
        const std::size_t used = decoder_.feed(data);
        data = data.subspan(used);
        if (auto frame = decoder_.take_frame()) {
            in_noise_ = false;
            // Clone hygiene: a clone must have its own entropy, clock and
            // hostname before it runs anything for the host. The host posts
            // them while the VM is paused and sends requests only after the
            // resume, so checking here (after the read that brought this
            // frame, before handling it) cannot miss a post. Once per read:
            // a pread of one page, not once per byte of a slow UART.
            if (!mailbox_checked) {
                const std::uint64_t identities = mailbox_.identity_changes();
                (void)mailbox_.check_and_apply();
                mailbox_checked = true;
                // A clone's proxied connections stayed with the VM it was
                // made from (its host has no such streams): end them here,
                // so their clients see a reset instead of waiting forever.
                if (mailbox_.identity_changes() != identities)
                    proxy_.end_all("this VM is a new clone; its connections stayed with its source");
            }
            dispatch(std::move(*frame));
            continue;
        }
        if (decoder_.failed()) {
            // Line noise or a broken frame: skip to the next magic, keep
            // serving. Logged once per run of bad bytes, a few times at most.
            ++resyncs_;
            if (!in_noise_ && logged_resyncs_++ < kMaxResyncLogs) {
                std::fprintf(stderr, "forkvm-agent: bad frame (%s), resyncing\n",
                             std::string(proto::proto_error_name(decoder_.error())).c_str());
            }
            in_noise_ = true;
            (void)decoder_.resync();
            continue;
        }
        if (used == 0) break;
    }
    return true;
}

// ---------------------------------------------------------------- loop ----

void Server::build_poll_set(std::vector<pollfd>& fds) {
    fds.clear();
    short ch = 0;
    if (!channel_eof_ && outbox_.control_bytes() < opt_.max_control_queue) ch |= POLLIN;
    if (!outbox_.empty()) ch |= POLLOUT;
    fds.push_back(pollfd{fd_, ch, 0});
    fds.push_back(pollfd{sigfd_.get(), POLLIN, 0});
    const bool bulk_room = outbox_.bulk_bytes() < opt_.max_bulk_queue;
    for (auto& [id, e] : execs_) {
        for (OutStream* s : {&e.out, &e.err}) {
            const bool want = s->fd && (s->kept >= s->cap || (s->credit > 0 && bulk_room));
            if (want) fds.push_back(pollfd{s->fd.get(), POLLIN, 0});
        }
        if (e.in) fds.push_back(pollfd{e.in.get(), POLLOUT, 0});
    }
    proxy_.add_to_poll(fds, bulk_room);
}

int Server::poll_timeout_ms() const {
    if (outbox_.bulk_bytes() < opt_.max_bulk_queue) {
        for (const auto& [id, x] : reads_) {
            if (x.credit > 0 || !x.eof_checked || (x.remaining && *x.remaining == 0)) return 0;
        }
    }
    std::optional<Clock::time_point> next;
    const auto consider = [&next](Clock::time_point t) {
        if (!next || t < *next) next = t;
    };
    for (const auto& [id, e] : execs_) {
        if (e.deadline) consider(*e.deadline);
        if (e.exited) consider(e.exit_time + std::chrono::milliseconds(opt_.exit_grace_ms));
    }
    if (!next) return -1;
    const auto ms = std::chrono::ceil<std::chrono::milliseconds>(*next - Clock::now()).count();
    // Anything due was handled at the end of the last iteration; a time in
    // the past is an exec past its grace period that waits for credit: it is
    // re-checked every 50 ms (credit itself arrives on the channel).
    if (ms <= 0) return 50;
    return static_cast<int>(std::min<long long>(ms, 60'000));
}

void Server::shutdown() {
    if (resyncs_ > 0) {
        std::fprintf(stderr, "forkvm-agent: %llu bad frame(s) skipped\n",
                     static_cast<unsigned long long>(resyncs_));
    }
    for (auto& [id, e] : execs_) kill_group(e);
    const auto until = Clock::now() + kKillWait;
    while (Clock::now() < until) {
        reap_children();
        bool all = true;
        for (auto& [id, e] : execs_) all = all && e.exited && ::kill(-e.pid, 0) != 0;
        if (all) break;
        ::usleep(1000);
    }
    execs_.clear();
    reads_.clear();
    writes_.clear();
    proxy_.shutdown();
}

int Server::run() {
    proto::Ready ready;
    ready.agent_version = opt_.agent_version;
    proxy_.listen();
    ready.capabilities = proto::kCapExec | proto::kCapFiles | proto::kCapCredit;
    if (proxy_.listening()) ready.capabilities |= proto::kCapProxy;
    outbox_.control(0, ready);

    std::vector<pollfd> fds;
    while (true) {
        // A bounded burst, then poll: while a fast reader keeps the channel
        // writable, an unbounded flush would send the whole bulk queue
        // before reading a request (a ping would wait behind 512 KiB).
        if (!outbox_.flush(fd_, kFlushBurst)) {
            channel_failed_ = true;
            break;
        }
        if (channel_eof_) break;
        build_poll_set(fds);
        const int rc = ::poll(fds.data(), fds.size(), poll_timeout_ms());
        if (rc < 0 && errno != EINTR) {
            channel_failed_ = true;
            break;
        }
        if (rc > 0) {
            if ((fds[1].revents & POLLIN) != 0) drain_signalfd();
            // Pipes first (the fds of the set are still owned by their execs:
            // the channel handling below may erase execs).
            for (std::size_t i = 2; i < fds.size(); ++i) {
                if (fds[i].revents == 0 || proxy_.handle(fds[i])) continue;
                for (auto& [id, e] : execs_) {
                    if (e.out.fd.get() == fds[i].fd) {
                        pump_exec_stream(e, e.out);
                    } else if (e.err.fd.get() == fds[i].fd) {
                        pump_exec_stream(e, e.err);
                    } else if (e.in.get() == fds[i].fd) {
                        pump_stdin(e);
                    } else {
                        continue;
                    }
                    break;
                }
            }
            if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0 && (fds[0].events & POLLIN) != 0) {
                if (!read_channel()) channel_eof_ = true;
            } else if ((fds[0].revents & (POLLHUP | POLLERR)) != 0 && (fds[0].events & POLLIN) == 0) {
                channel_eof_ = true;
            }
        }
        proxy_.sweep();
        reap_children();
        check_timers();
        pump_reads();
        finish_ready_execs();
    }
    shutdown();
    return channel_failed_ ? 1 : 0;
}

}  // namespace

int serve(int channel_fd, const Options& options) {
    MailboxWatcher mailbox(options);
    return serve(channel_fd, options, mailbox);
}

int serve(int channel_fd, const Options& options, MailboxWatcher& mailbox) {
    // Children must start with 0..2 taken, so their pipe ends are >= 3.
    for (int fd = 0; fd <= 2; ++fd) {
        if (::fcntl(fd, F_GETFD) < 0) {
            const int null_fd = ::open("/dev/null", O_RDWR);
            if (null_fd >= 0 && null_fd != fd) {
                ::dup2(null_fd, fd);
                ::close(null_fd);
            }
        }
    }
    const int flags = ::fcntl(channel_fd, F_GETFL);
    if (flags < 0 || ::fcntl(channel_fd, F_SETFL, flags | O_NONBLOCK) != 0) return 1;
    ::signal(SIGPIPE, SIG_IGN);
    if (options.child_subreaper) (void)::prctl(PR_SET_CHILD_SUBREAPER, 1UL, 0UL, 0UL, 0UL);

    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigset_t old_mask;
    if (::sigprocmask(SIG_BLOCK, &chld, &old_mask) != 0) return 1;
    int rc = 1;
    UniqueFd sfd(::signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC));
    if (sfd) {
        Server server(channel_fd, std::move(sfd), options, mailbox);
        rc = server.run();
    }
    ::sigprocmask(SIG_SETMASK, &old_mask, nullptr);
    return rc;
}

}  // namespace forkvm::agent
