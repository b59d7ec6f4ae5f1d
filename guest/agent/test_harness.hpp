#pragma once
// Test harness for the agent (host-side unit tests, no VM): runs serve() in a
// forked child on one end of a socketpair and drives it with the protocol
// library on the other. Every wait is bounded, so a bug fails a test
// instead of hanging it. Header-only and doctest-free; used by
// tests/unit/agent_server_*_test.cpp.

#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "guest/agent/options.hpp"
#include "guest/agent/server.hpp"
#include "guest/protocol/messages.hpp"
#include "vmm/unique_fd.hpp"  // header-only, std-only: shared with the host

namespace forkvm::agent::testing {

// Options for tests: the current user as the default exec user.
inline Options test_options() {
    Options o;
    if (const passwd* pw = ::getpwuid(::geteuid())) o.default_user = pw->pw_name;
    // Never the real /dev/mem: tests run as root on hosts where it would be
    // the host's physical memory. Mailbox tests set their own file.
    o.mailbox_path.clear();
    // No egress proxy unless a test asks for one on a port of its own
    // (tests run in parallel, and exec environments stay as requested).
    o.proxy_port = 0;
    return o;
}

class AgentHarness {
public:
    // socket_buffer > 0 shrinks both socket buffers (flood tests).
    explicit AgentHarness(const Options& options = test_options(), int socket_buffer = 0) {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
        if (socket_buffer > 0) {
            ::setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &socket_buffer, sizeof socket_buffer);
            ::setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &socket_buffer, sizeof socket_buffer);
        }
        pid_ = ::fork();
        if (pid_ == 0) {
            ::close(sv[0]);
            ::_exit(serve(sv[1], options));
        }
        ::close(sv[1]);
        fd_.reset(sv[0]);
    }
    AgentHarness(const AgentHarness&) = delete;
    AgentHarness& operator=(const AgentHarness&) = delete;
    ~AgentHarness() { (void)stop(); }

    // Closes the channel and waits (bounded) for the agent; its exit status,
    // or -1 if it had to be killed.
    int stop() {
        if (pid_ <= 0) return exit_status_;
        fd_.reset();
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(3);
        int status = 0;
        while (::waitpid(pid_, &status, WNOHANG) == 0) {
            if (std::chrono::steady_clock::now() > until) {
                ::kill(pid_, SIGKILL);
                ::waitpid(pid_, &status, 0);
                pid_ = -1;
                return exit_status_ = -1;
            }
            ::usleep(2000);
        }
        pid_ = -1;
        exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        return exit_status_;
    }

    [[nodiscard]] bool started() const { return pid_ > 0 && fd_.valid(); }
    [[nodiscard]] pid_t agent_pid() const { return pid_; }

    template <class M>
    bool send(std::uint32_t id, const M& message) {
        proto::Bytes out;
        if (proto::append_message(out, id, message) != proto::ProtoError::none) return false;
        return send_raw(out);
    }
    bool send_raw(const proto::Bytes& bytes) {
        std::size_t off = 0;
        while (off < bytes.size()) {
            const ssize_t n = ::write(fd_.get(), bytes.data() + off, bytes.size() - off);
            if (n <= 0) return false;
            off += static_cast<std::size_t>(n);
        }
        return true;
    }

    // Next frame, or nullopt after `timeout_ms` or on EOF / a decode error.
    std::optional<proto::Frame> recv(int timeout_ms = 2000) {
        const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
        while (true) {
            if (auto f = decoder_.take_frame()) return f;
            if (decoder_.failed()) return std::nullopt;
            if (!pending_.empty()) {
                const std::size_t used = decoder_.feed(pending_);
                pending_.erase(pending_.begin(), pending_.begin() + static_cast<std::ptrdiff_t>(used));
                continue;
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                                  until - std::chrono::steady_clock::now())
                                  .count();
            if (left <= 0) return std::nullopt;
            pollfd p{fd_.get(), POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
            std::uint8_t buf[65536];
            const ssize_t n = ::read(fd_.get(), buf, std::min(sizeof buf, read_size_));
            if (n <= 0) return std::nullopt;
            pending_.insert(pending_.end(), buf, buf + n);
        }
    }

    // Next frame decoded as M (nullopt on timeout or another type).
    template <class M>
    std::optional<M> recv_as(int timeout_ms = 2000) {
        auto f = recv(timeout_ms);
        if (!f) return std::nullopt;
        auto m = proto::decode_message<M>(*f);
        if (!m) return std::nullopt;
        return std::move(*m);
    }

    // Sends a request and returns the decoded reply (any type).
    template <class M>
    std::optional<proto::Message> request(std::uint32_t id, const M& message, int timeout_ms = 2000) {
        if (!send(id, message)) return std::nullopt;
        auto f = recv(timeout_ms);
        if (!f || f->request_id != id) return std::nullopt;
        auto m = proto::decode_any(*f);
        if (!m) return std::nullopt;
        return std::move(*m);
    }

    // Bytes per read() from the channel: small values keep the harness from
    // buffering frames ahead (flood tests count frames).
    void set_read_size(std::size_t n) { read_size_ = std::max<std::size_t>(n, 1); }

    // Consumes the Ready frame.
    std::optional<proto::Ready> ready() { return recv_as<proto::Ready>(); }

private:
    pid_t pid_ = -1;
    int exit_status_ = -1;
    UniqueFd fd_;
    proto::FrameDecoder decoder_;
    proto::Bytes pending_;
    std::size_t read_size_ = 65536;
};

// The outcome of one exec run to completion by run_exec().
struct ExecRun {
    std::optional<proto::Error> error;  // the request failed
    std::uint32_t pid = 0;
    std::string out;
    std::string err;
    std::optional<proto::ExecExit> exit;
    int frames = 0;  // frames received for the exec
};

// Runs an exec, granting credit back as output arrives, until ExecExit,
// an Error, or the timeout.
inline ExecRun run_exec(AgentHarness& h, std::uint32_t id, const proto::ExecStart& req,
                        int timeout_ms = 3000) {
    ExecRun r;
    if (!h.send(id, req)) return r;
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < until) {
        auto f = h.recv(static_cast<int>(
            std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now())
                .count() +
            1));
        if (!f) break;
        if (f->request_id != id) continue;
        ++r.frames;
        auto m = proto::decode_any(*f);
        if (!m) break;
        if (auto* s = std::get_if<proto::ExecStarted>(&*m)) {
            r.pid = s->pid;
        } else if (auto* o = std::get_if<proto::ExecOutput>(&*m)) {
            std::string& dst = o->stream == proto::StreamId::exec_stdout ? r.out : r.err;
            dst.append(o->data.begin(), o->data.end());
            h.send(id, proto::Credit{o->stream, static_cast<std::uint32_t>(o->data.size())});
        } else if (auto* x = std::get_if<proto::ExecExit>(&*m)) {
            r.exit = *x;
            break;
        } else if (auto* e = std::get_if<proto::Error>(&*m)) {
            r.error = *e;
            break;
        }
    }
    return r;
}

inline proto::ExecStart exec_req(std::vector<std::string> argv, std::uint32_t credit = 65536) {
    proto::ExecStart e;
    e.argv = std::move(argv);
    e.stdout_cap = 1U << 20U;
    e.stderr_cap = 1U << 20U;
    e.initial_credit = credit;
    return e;
}

// Whether any process of group `pgid` exists, waiting up to timeout_ms for it to go.
inline bool group_gone(pid_t pgid, int timeout_ms = 1000) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (true) {
        if (::kill(-pgid, 0) != 0 && errno == ESRCH) return true;
        if (std::chrono::steady_clock::now() > until) return false;
        ::usleep(2000);
    }
}

}  // namespace forkvm::agent::testing
