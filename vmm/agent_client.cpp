#include "vmm/agent_client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <limits>
#include <utility>
#include <variant>

#include "vmm/sys_error.hpp"

namespace forkvm::vmm {

namespace {

// What a request is, which decides the frames that may answer it.
enum Op : int { op_ping, op_exec, op_read, op_write, op_stat, op_list, op_exists, op_ok };

const char* op_name(int op) {
    switch (op) {
        case op_ping: return "ping";
        case op_exec: return "exec";
        case op_read: return "read_file";
        case op_write: return "write_file";
        case op_stat: return "stat";
        case op_list: return "list_dir";
        case op_exists: return "exists";
        default: return "file operation";
    }
}

constexpr std::size_t kReadBuffer = 64 * 1024;
// Room for the `bytes` length prefix (and slack) in a file_data payload.
constexpr std::uint32_t kFileDataOverhead = 64;
// Credit grants are held back while this much is queued for the writer.
constexpr std::size_t kGrantBacklog = 64 * 1024;

std::uint64_t saturating_add(std::uint64_t a, std::uint64_t b) {
    return a > std::numeric_limits<std::uint64_t>::max() - b ? std::numeric_limits<std::uint64_t>::max()
                                                             : a + b;
}

std::string errno_text(int err) { return fmt::format("{} (errno {})", std::strerror(err), err); }

}  // namespace

struct AgentClient::Pending {
    std::uint32_t id = 0;
    int op = op_ok;
    std::uint64_t nonce = 0;  // ping
    AgentClock::time_point sent_at{};
    AgentClock::time_point replied_at{};

    bool done = false;  // the terminal reply arrived and the id is free again
    std::optional<proto::Message> terminal;
    std::optional<AgentError> failure;  // the channel failed before the terminal reply

    // exec
    bool started = false;
    bool started_delivered = false;
    std::uint32_t pid = 0;

    // Received, not yet consumed: [0] file data, [1] stdout, [2] stderr. Each
    // is bounded by its window, because credit is granted only once consumed.
    std::array<proto::Bytes, 3> data;
    // Credit the agent still holds per stream (the host's view).
    std::array<std::uint64_t, 3> window{};
    // Consumed bytes not granted back yet (see flush_grants_locked).
    std::array<std::uint64_t, 3> owed{};
    std::uint64_t received = 0;  // read_file: bytes so far, checked against file_end

    // write_file: credit granted by the agent and not used yet.
    std::uint64_t send_credit = 0;

    bool cancel_requested = false;
    bool cancel_sent = false;
};

// Counts calls running in other threads, so the destructor can wait for them
// to leave before the members they use go away.
class AgentClient::CallScope {
public:
    explicit CallScope(AgentClient& client) : client_(client) {
        const std::lock_guard lock(client_.mu_);
        ++client_.active_calls_;
    }
    ~CallScope() {
        const std::lock_guard lock(client_.mu_);
        --client_.active_calls_;
        client_.cv_.notify_all();
    }
    CallScope(const CallScope&) = delete;
    CallScope& operator=(const CallScope&) = delete;

private:
    AgentClient& client_;
};

// Forgets a request that ends without its terminal reply (timeout, an
// exception from a callback): its id is unregistered, so late frames for it
// are only counted, and a running exec or transfer is cancelled.
class AgentClient::RequestScope {
public:
    RequestScope(AgentClient& client, std::shared_ptr<Pending> p) : client_(client), p_(std::move(p)) {}
    ~RequestScope() { client_.abandon(*p_); }
    RequestScope(const RequestScope&) = delete;
    RequestScope& operator=(const RequestScope&) = delete;

private:
    AgentClient& client_;
    std::shared_ptr<Pending> p_;
};

std::string_view AgentClient::state_name(State state) noexcept {
    switch (state) {
        case State::healthy: return "healthy";
        case State::unhealthy: return "unhealthy";
        case State::broken: return "broken";
        case State::closed: return "closed";
    }
    return "unknown";
}

AgentClient::AgentClient(UniqueFd fd, AgentClientOptions options) : fd_(std::move(fd)), options_(options) {
    if (!fd_) throw SysError("AgentClient: invalid fd", EBADF);
    options_.max_payload = std::clamp<std::uint32_t>(options_.max_payload, 64, proto::kMaxPayload);
    options_.initial_credit = std::max<std::uint32_t>(options_.initial_credit, 1);
    options_.upload_chunk =
        std::clamp<std::uint32_t>(options_.upload_chunk, 1, proto::kMaxPayload - kFileDataOverhead);
    options_.max_in_flight = std::max<std::size_t>(options_.max_in_flight, 1);

    const int flags = ::fcntl(fd_.get(), F_GETFL);
    if (flags < 0 || ::fcntl(fd_.get(), F_SETFL, flags | O_NONBLOCK) < 0)
        throw SysError("AgentClient: fcntl O_NONBLOCK", errno);
    int type = 0;
    socklen_t len = sizeof(type);
    is_socket_ = ::getsockopt(fd_.get(), SOL_SOCKET, SO_TYPE, &type, &len) == 0;
    wake_fd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_fd_) throw SysError("AgentClient: eventfd", errno);

    reader_ = std::thread([this] { reader_loop(); });
    try {
        writer_ = std::thread([this] { writer_loop(); });
    } catch (...) {
        signal_stop();
        reader_.join();
        throw;
    }
}

AgentClient::~AgentClient() {
    close();
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return active_calls_ == 0; });
}

void AgentClient::close() {
    std::call_once(close_once_, [this] {
        {
            const std::lock_guard lock(mu_);
            stopping_ = true;
            fail_all_locked(State::closed, AgentErrorCode::closed, "the client was closed");
            cv_.notify_all();
        }
        signal_stop();
        if (reader_.joinable()) reader_.join();
        if (writer_.joinable()) writer_.join();
        fd_.reset();
    });
}

void AgentClient::signal_stop() noexcept {
    // An eventfd that stays readable: both threads poll it and leave.
    const std::uint64_t one = 1;
    if (wake_fd_ && ::write(wake_fd_.get(), &one, sizeof(one)) < 0) {
        // Only EAGAIN (counter saturated) is possible: it is readable already.
    }
}

AgentClient::State AgentClient::state() const {
    const std::lock_guard lock(mu_);
    return state_;
}

std::string AgentClient::broken_reason() const {
    const std::lock_guard lock(mu_);
    return state_ == State::broken ? reason_ : std::string();
}

std::uint64_t AgentClient::unknown_replies() const {
    const std::lock_guard lock(mu_);
    return unknown_replies_;
}

std::size_t AgentClient::in_flight() const {
    const std::lock_guard lock(mu_);
    return pending_.size();
}

std::size_t AgentClient::queued_bytes() const {
    const std::lock_guard lock(mu_);
    return queued_bytes_;
}

bool AgentClient::usable_locked() const noexcept {
    return !stopping_ && state_ != State::broken && state_ != State::closed;
}

void AgentClient::throw_if_unusable_locked() const {
    if (state_ == State::broken) throw AgentError(AgentErrorCode::broken, reason_);
    if (state_ == State::closed || stopping_)
        throw AgentError(AgentErrorCode::closed, reason_.empty() ? "the client was closed" : reason_);
}

void AgentClient::fail_all_locked(State state, AgentErrorCode code, const std::string& reason) {
    // The first cause wins: a channel that broke and was then closed stays broken.
    if (state_ == State::broken || state_ == State::closed) return;
    state_ = state;
    reason_ = reason;
    for (auto& entry : pending_) entry.second->failure.emplace(code, reason);
    pending_.clear();
    queued_bytes_ -= out_.size();
    out_.clear();
    cv_.notify_all();
    signal_stop();  // nothing more is read or written on this channel
}

// ---- sending ---------------------------------------------------------------

template <class M>
void AgentClient::send_locked(std::uint32_t id, const M& message) {
    if (!usable_locked()) return;  // the request learns of the failure by itself
    const std::size_t before = out_.size();
    if (proto::append_message(out_, id, message) != proto::ProtoError::none) return;  // cannot happen: small
    queued_bytes_ += out_.size() - before;
    cv_.notify_all();
}

void AgentClient::send_file_data_locked(std::uint32_t id, ByteView data) {
    if (!usable_locked()) return;
    // FileData's payload (`bytes data`) serialised straight into the queue:
    // one copy of the upload, not three.
    const std::size_t before = out_.size();
    const std::size_t start = proto::begin_frame(out_);
    proto::Writer w(out_);
    w.bytes(data);
    if (proto::end_frame(out_, start, proto::MessageType::file_data, id) != proto::ProtoError::none) return;
    queued_bytes_ += out_.size() - before;
    cv_.notify_all();
}

template <class M>
std::shared_ptr<AgentClient::Pending> AgentClient::start(int op, const M& message,
                                                         std::uint32_t initial_credit, std::uint64_t nonce) {
    const std::lock_guard lock(mu_);
    throw_if_unusable_locked();
    if (pending_.size() >= options_.max_in_flight)
        throw AgentError(AgentErrorCode::busy, fmt::format("{} requests already in flight", pending_.size()));
    while (next_id_ == 0 || pending_.contains(next_id_)) ++next_id_;  // 0 is reserved
    const std::uint32_t id = next_id_++;

    const std::size_t before = out_.size();
    if (proto::append_message(out_, id, message) != proto::ProtoError::none)
        throw AgentError(AgentErrorCode::invalid_argument,
                         fmt::format("{} request does not fit in one frame ({} bytes max)", op_name(op),
                                     proto::kMaxPayload));
    queued_bytes_ += out_.size() - before;

    auto p = std::make_shared<Pending>();
    p->id = id;
    p->op = op;
    p->nonce = nonce;
    p->window.fill(initial_credit);
    p->sent_at = AgentClock::now();
    pending_.emplace(id, p);
    cv_.notify_all();
    return p;
}

void AgentClient::grant_locked(Pending& p, std::size_t stream, std::size_t bytes) {
    p.owed[stream] += bytes;
    flush_grants_locked(p);
}

bool AgentClient::grants_sendable_locked(const Pending& p) const noexcept {
    return queued_bytes_ < kGrantBacklog &&
           std::any_of(p.owed.begin(), p.owed.end(), [](auto n) { return n > 0; });
}

void AgentClient::flush_grants_locked(Pending& p) {
    // Nothing to grant once the request is over: the agent sends no more.
    if (p.done || p.failure || !pending_.contains(p.id)) {
        p.owed.fill(0);
        return;
    }
    // Grants wait while the agent is not draining what we already queued:
    // its window then runs dry, instead of our queue growing without bound.
    if (queued_bytes_ >= kGrantBacklog) return;
    for (std::size_t stream = 0; stream < p.owed.size(); ++stream) {
        while (p.owed[stream] > 0) {
            const auto n = static_cast<std::uint32_t>(
                std::min<std::uint64_t>(p.owed[stream], std::numeric_limits<std::uint32_t>::max()));
            p.owed[stream] -= n;
            p.window[stream] += n;  // before the frame leaves, so the agent can never be ahead of it
            send_locked(p.id, proto::Credit{static_cast<proto::StreamId>(stream), n});
        }
    }
}

void AgentClient::request_cancel(Pending& p) {
    const std::lock_guard lock(mu_);
    if (p.done) return;
    p.cancel_requested = true;
    cv_.notify_all();
}

bool AgentClient::send_cancel_if_requested_locked(Pending& p) {
    if (!p.cancel_requested || p.cancel_sent) return false;
    p.cancel_sent = true;
    send_locked(p.id, proto::Cancel{});
    return true;
}

void AgentClient::abandon(Pending& p) {
    const std::lock_guard lock(mu_);
    if (p.done) return;
    const auto it = pending_.find(p.id);
    if (it == pending_.end() || it->second.get() != &p) return;
    pending_.erase(it);
    if ((p.op == op_exec || p.op == op_read || p.op == op_write) && !p.cancel_sent) {
        p.cancel_sent = true;
        send_locked(p.id, proto::Cancel{});
    }
}

// ---- waiting ---------------------------------------------------------------

template <class Ready>
void AgentClient::wait_for(std::unique_lock<std::mutex>& lock, Pending& p, AgentClock::time_point deadline,
                           Ready ready) {
    while (true) {
        if (p.failure) throw *p.failure;
        // The deadline is checked even when there is work, so an agent that
        // streams output without end cannot keep a call alive past it; once
        // the terminal reply is in, only the (bounded) buffered rest remains.
        const bool past = AgentClock::now() >= deadline;
        if (ready() && (!past || p.done)) return;
        if (past) {
            if (state_ == State::healthy) state_ = State::unhealthy;
            throw AgentError(AgentErrorCode::timeout,
                             fmt::format("{} request {} not answered by its deadline", op_name(p.op), p.id));
        }
        cv_.wait_until(lock, deadline);
    }
}

proto::Message AgentClient::wait_terminal(std::unique_lock<std::mutex>& lock, Pending& p,
                                          AgentClock::time_point deadline) {
    wait_for(lock, p, deadline, [&p] { return p.done; });
    if (const auto* e = std::get_if<proto::Error>(&*p.terminal))
        throw AgentError(agent_error_code(e->code), e->message, e->err);
    return std::move(*p.terminal);
}

template <class Reply, class M>
Reply AgentClient::simple_call(int op, const M& message, Deadline deadline) {
    const CallScope call(*this);
    const AgentClock::time_point at = deadline.resolve(options_.default_timeout);
    const std::shared_ptr<Pending> p = start(op, message);
    const RequestScope scope(*this, p);
    std::unique_lock lock(mu_);
    // dispatch_locked() accepted only Reply or Error as the terminal frame.
    return std::get<Reply>(wait_terminal(lock, *p, at));
}

// ---- operations ------------------------------------------------------------

AgentInfo AgentClient::wait_ready(Deadline deadline) {
    const CallScope call(*this);
    const AgentClock::time_point at = deadline.resolve(options_.default_timeout);
    std::unique_lock lock(mu_);
    while (true) {
        throw_if_unusable_locked();
        if (ready_) return *ready_;
        if (cv_.wait_until(lock, at) == std::cv_status::timeout) {
            throw_if_unusable_locked();
            if (ready_) return *ready_;
            if (state_ == State::healthy) state_ = State::unhealthy;
            throw AgentError(AgentErrorCode::timeout, "the agent did not send ready by the deadline");
        }
    }
}

PingResult AgentClient::ping(Deadline deadline) {
    const CallScope call(*this);
    const AgentClock::time_point at = deadline.resolve(options_.default_timeout);
    std::uint64_t nonce = 0;
    {
        const std::lock_guard lock(mu_);
        nonce = next_nonce_++;
    }
    const std::shared_ptr<Pending> p = start(op_ping, proto::Ping{nonce}, 0, nonce);
    const RequestScope scope(*this, p);
    std::unique_lock lock(mu_);
    const auto pong = std::get<proto::Pong>(wait_terminal(lock, *p, at));
    return PingResult{std::chrono::duration_cast<std::chrono::nanoseconds>(p->replied_at - p->sent_at),
                      pong.monotonic_ns};
}

ExecResult AgentClient::exec(const ExecRequest& request, const ExecCallbacks& callbacks, Deadline deadline,
                             std::stop_token stop) {
    const CallScope call(*this);
    const AgentClock::time_point at = deadline.resolve(options_.default_timeout);
    proto::ExecStart m;
    m.argv = request.argv;
    m.env = request.env;
    m.cwd = request.cwd;
    m.user = request.user;
    m.timeout_ms = request.timeout_ms;
    m.stdin_data.assign(request.stdin_data.begin(), request.stdin_data.end());
    m.stdout_cap = request.stdout_cap;
    m.stderr_cap = request.stderr_cap;
    m.initial_credit = options_.initial_credit;
    const std::shared_ptr<Pending> p = start(op_exec, m, options_.initial_credit);
    m = {};  // the copy of stdin is in the queue; do not hold it twice
    const RequestScope scope(*this, p);
    // Declared after `scope` and before `lock`: destroyed with mu_ unlocked,
    // since a concurrent stop callback takes mu_.
    const std::stop_callback on_stop(std::move(stop), [this, p] { request_cancel(*p); });
    std::unique_lock lock(mu_);

    ExecResult result;
    const auto has_work = [this, &p] {
        return (p->cancel_requested && !p->cancel_sent) || (p->started && !p->started_delivered) ||
               !p->data[1].empty() || !p->data[2].empty() || p->done || grants_sendable_locked(*p);
    };
    while (true) {
        wait_for(lock, *p, at, has_work);
        if (send_cancel_if_requested_locked(*p)) continue;
        flush_grants_locked(*p);
        if (p->started && !p->started_delivered) {
            p->started_delivered = true;
            result.pid = p->pid;
            if (callbacks.on_started) {
                lock.unlock();
                callbacks.on_started(result.pid);
                lock.lock();
            }
            continue;
        }
        bool delivered = false;
        for (std::size_t stream = 1; stream <= 2 && !delivered; ++stream) {
            if (p->data[stream].empty()) continue;
            proto::Bytes chunk;
            chunk.swap(p->data[stream]);
            const auto& sink = stream == 1 ? callbacks.on_stdout : callbacks.on_stderr;
            if (sink) {
                lock.unlock();
                sink(ByteView(chunk));
                lock.lock();
            }
            grant_locked(*p, stream, chunk.size());
            delivered = true;
        }
        if (delivered || !p->done) continue;
        break;  // done, and every byte before the exit was delivered
    }
    const auto exit = std::get<proto::ExecExit>(wait_terminal(lock, *p, at));
    result.exit_code = exit.exit_code;
    result.term_signal = exit.term_signal;
    result.timed_out = exit.timed_out;
    result.cancelled = p->cancel_requested;
    result.stdout_truncated = exit.stdout_truncated;
    result.stderr_truncated = exit.stderr_truncated;
    result.duration = std::chrono::microseconds(static_cast<std::int64_t>(
        std::min<std::uint64_t>(exit.duration_us, std::numeric_limits<std::int64_t>::max())));
    return result;
}

BufferedExecResult AgentClient::exec_buffered(ExecRequest request, Deadline deadline, std::stop_token stop) {
    const std::uint64_t limit = options_.max_buffered_bytes;
    request.stdout_cap = std::min(request.stdout_cap, limit);
    request.stderr_cap = std::min(request.stderr_cap, limit);
    BufferedExecResult out;
    bool out_cut = false;
    bool err_cut = false;
    // The agent enforces the caps; the host does too, so a misbehaving agent
    // cannot make it buffer more.
    const auto collect = [](std::string& into, std::uint64_t cap, bool& cut) {
        return [&into, cap, &cut](ByteView data) {
            const std::size_t room = cap > into.size() ? static_cast<std::size_t>(cap - into.size()) : 0;
            const std::size_t take = std::min(room, data.size());
            into.append(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(take));
            if (take < data.size()) cut = true;
        };
    };
    ExecCallbacks callbacks;
    callbacks.on_stdout = collect(out.stdout_data, request.stdout_cap, out_cut);
    callbacks.on_stderr = collect(out.stderr_data, request.stderr_cap, err_cut);
    static_cast<ExecResult&>(out) = exec(request, callbacks, deadline, std::move(stop));
    out.stdout_truncated = out.stdout_truncated || out_cut;
    out.stderr_truncated = out.stderr_truncated || err_cut;
    return out;
}

ReadFileResult AgentClient::read_file(const ReadFileRequest& request, const DataSink& sink, Deadline deadline,
                                      std::stop_token stop) {
    const CallScope call(*this);
    const AgentClock::time_point at = deadline.resolve(options_.default_timeout);
    const proto::ReadFile m{request.path, request.offset, request.max_bytes, options_.initial_credit};
    const std::shared_ptr<Pending> p = start(op_read, m, options_.initial_credit);
    const RequestScope scope(*this, p);
    const std::stop_callback on_stop(std::move(stop), [this, p] { request_cancel(*p); });
    std::unique_lock lock(mu_);

    const auto has_work = [this, &p] {
        return (p->cancel_requested && !p->cancel_sent) || !p->data[0].empty() || p->done ||
               grants_sendable_locked(*p);
    };
    while (true) {
        wait_for(lock, *p, at, has_work);
        if (send_cancel_if_requested_locked(*p)) continue;
        flush_grants_locked(*p);
        if (p->data[0].empty()) {
            if (p->done) break;
            continue;
        }
        proto::Bytes chunk;
        chunk.swap(p->data[0]);
        if (sink) {
            lock.unlock();
            sink(ByteView(chunk));
            lock.lock();
        }
        grant_locked(*p, 0, chunk.size());
    }
    const auto end = std::get<proto::FileEnd>(wait_terminal(lock, *p, at));
    return ReadFileResult{end.total_bytes, end.eof};
}

ReadFileData AgentClient::read_file(const ReadFileRequest& request, Deadline deadline, std::stop_token stop) {
    const std::uint64_t limit = options_.max_buffered_bytes;
    // Ask for one byte more than fits: receiving it proves the file is too big.
    ReadFileRequest bounded = request;
    if (bounded.max_bytes == 0 || bounded.max_bytes > limit) bounded.max_bytes = limit + 1;
    ReadFileData out;
    const ReadFileResult r = read_file(
        bounded,
        [&out, limit, &request](ByteView data) {
            if (out.data.size() + data.size() > limit)
                throw AgentError(AgentErrorCode::too_large,
                                 fmt::format("{} is larger than {} bytes", request.path, limit));
            out.data.insert(out.data.end(), data.begin(), data.end());
        },
        deadline, std::move(stop));
    out.eof = r.eof;
    return out;
}

void AgentClient::write_file(const WriteFileRequest& request, ByteView data, Deadline deadline,
                             std::stop_token stop) {
    std::size_t offset = 0;
    write_file(
        request, data.size(),
        [&data, &offset](std::span<std::uint8_t> buffer) {
            const std::size_t n = std::min(buffer.size(), data.size() - offset);
            std::copy_n(data.begin() + static_cast<std::ptrdiff_t>(offset), n, buffer.begin());
            offset += n;
            return n;
        },
        deadline, std::move(stop));
}

void AgentClient::write_file(const WriteFileRequest& request, std::uint64_t total_size,
                             const DataSource& source, Deadline deadline, std::stop_token stop) {
    const CallScope call(*this);
    const AgentClock::time_point at = deadline.resolve(options_.default_timeout);
    proto::WriteFileBegin m;
    m.path = request.path;
    m.mode = request.mode;
    m.create_parents = request.create_parents;
    m.write_mode = request.append ? proto::WriteMode::append : proto::WriteMode::truncate;
    m.total_size = total_size;
    const std::shared_ptr<Pending> p = start(op_write, m);
    const RequestScope scope(*this, p);
    const std::stop_callback on_stop(std::move(stop), [this, p] { request_cancel(*p); });
    std::unique_lock lock(mu_);

    // At most about two chunks wait in the write queue, so a fast source and
    // a generous agent cannot make the host buffer the whole upload.
    const std::size_t chunk_max = options_.upload_chunk;
    const std::size_t queue_limit = 2 * (chunk_max + proto::kHeaderSize + kFileDataOverhead);
    proto::Bytes buffer;
    std::uint64_t sent = 0;
    while (sent < total_size) {
        wait_for(lock, *p, at, [&] {
            return (p->cancel_requested && !p->cancel_sent) || p->done ||
                   (p->send_credit > 0 && queued_bytes_ < queue_limit);
        });
        if (send_cancel_if_requested_locked(*p) || p->done) break;
        const auto n =
            static_cast<std::size_t>(std::min<std::uint64_t>({chunk_max, p->send_credit, total_size - sent}));
        buffer.resize(n);
        lock.unlock();
        const std::size_t got = source(std::span<std::uint8_t>(buffer));
        lock.lock();
        if (got == 0 || got > n)
            throw AgentError(
                AgentErrorCode::invalid_argument,
                fmt::format("upload source for {} gave {} of {} bytes", request.path, sent, total_size));
        p->send_credit -= got;
        sent += got;
        send_file_data_locked(p->id, ByteView(buffer.data(), got));
    }
    if (!p->done && !p->cancel_sent) send_locked(p->id, proto::WriteFileEnd{});
    (void)std::get<proto::Ok>(wait_terminal(lock, *p, at));
}

proto::StatResult AgentClient::stat(const std::string& path, bool follow_symlinks, Deadline deadline) {
    return simple_call<proto::StatResult>(op_stat, proto::Stat{path, follow_symlinks}, deadline);
}

proto::DirEntries AgentClient::list_dir(const std::string& path, std::uint32_t max_entries,
                                        Deadline deadline) {
    return simple_call<proto::DirEntries>(op_list, proto::ListDir{path, max_entries}, deadline);
}

bool AgentClient::exists(const std::string& path, Deadline deadline) {
    return simple_call<proto::Bool>(op_exists, proto::Exists{path}, deadline).value;
}

void AgentClient::remove(const std::string& path, bool recursive, Deadline deadline) {
    (void)simple_call<proto::Ok>(op_ok, proto::Remove{path, recursive}, deadline);
}

void AgentClient::rename(const std::string& from, const std::string& to, Deadline deadline) {
    (void)simple_call<proto::Ok>(op_ok, proto::Rename{from, to}, deadline);
}

void AgentClient::mkdir(const std::string& path, bool parents, std::uint32_t mode, Deadline deadline) {
    (void)simple_call<proto::Ok>(op_ok, proto::Mkdir{path, mode, parents}, deadline);
}

// ---- reader ----------------------------------------------------------------

void AgentClient::reader_loop() {
    proto::FrameDecoder decoder(options_.max_payload);
    std::vector<std::uint8_t> buffer(kReadBuffer);
    std::array<pollfd, 2> fds{pollfd{fd_.get(), POLLIN, 0}, pollfd{wake_fd_.get(), POLLIN, 0}};
    while (true) {
        if (::poll(fds.data(), fds.size(), -1) < 0) {
            if (errno == EINTR) continue;
            const std::lock_guard lock(mu_);
            fail_all_locked(State::closed, AgentErrorCode::closed, "poll: " + errno_text(errno));
            return;
        }
        if (fds[1].revents != 0) return;
        if (fds[0].revents == 0) continue;
        const ssize_t n = ::read(fd_.get(), buffer.data(), buffer.size());
        if (n < 0) {
            if (errno == EINTR || errno == EAGAIN) continue;
            const std::lock_guard lock(mu_);
            fail_all_locked(State::closed, AgentErrorCode::closed,
                            "read from the agent: " + errno_text(errno));
            return;
        }
        if (n == 0) {
            const std::lock_guard lock(mu_);
            fail_all_locked(State::closed, AgentErrorCode::closed, "the agent closed the channel");
            return;
        }
        const AgentClock::time_point now = AgentClock::now();
        const proto::ProtoError error =
            decoder.feed_all(ByteView(buffer.data(), static_cast<std::size_t>(n)),
                             [this, now](proto::Frame&& frame) { handle_frame(std::move(frame), now); });
        const std::lock_guard lock(mu_);
        if (error != proto::ProtoError::none) {
            fail_all_locked(State::broken, AgentErrorCode::broken,
                            fmt::format("bad frame from the agent: {}", proto::proto_error_name(error)));
        }
        // Broken or closed: stop reading, so a hostile guest costs nothing more.
        if (state_ == State::broken || state_ == State::closed || stopping_) return;
    }
}

void AgentClient::handle_frame(proto::Frame&& frame, AgentClock::time_point now) {
    proto::Result<proto::Message> decoded = proto::decode_any(frame);
    if (decoded &&
        static_cast<std::uint8_t>(frame.type) >= static_cast<std::uint8_t>(proto::MessageType::proxy_open)) {
        return handle_proxy_frame(frame.request_id, std::move(*decoded));
    }
    const std::lock_guard lock(mu_);
    if (state_ == State::broken || state_ == State::closed) return;
    const auto broken = [&](const std::string& why) {
        fail_all_locked(State::broken, AgentErrorCode::broken, why);
    };
    if (!decoded) {
        return broken(fmt::format("undecodable {} payload for request {}: {}",
                                  proto::message_type_name(frame.type), frame.request_id,
                                  proto::proto_error_name(decoded.error())));
    }
    if (auto* ready = std::get_if<proto::Ready>(&*decoded)) {
        if (frame.request_id != 0) return broken(fmt::format("ready with request id {}", frame.request_id));
        if (ready_) return broken("a second ready frame (did the agent restart?)");
        if (ready->protocol_version != proto::kProtocolVersion)
            return broken(fmt::format("agent speaks protocol version {}, the host {}",
                                      ready->protocol_version, proto::kProtocolVersion));
        ready_ = AgentInfo{ready->protocol_version, std::move(ready->agent_version), ready->capabilities};
        cv_.notify_all();
        return;
    }
    const auto it = pending_.find(frame.request_id);
    if (it == pending_.end()) {
        // A late reply to a request that timed out or was abandoned (or junk
        // with a valid frame): harmless, only counted.
        ++unknown_replies_;
        return;
    }
    const std::shared_ptr<Pending> p = it->second;  // dispatch may erase the map entry
    dispatch_locked(*p, std::move(*decoded), now);
    cv_.notify_all();
}

namespace {

// What a client in a sandbox without an egress handler reads.
std::string no_egress_response() {
    const std::string body = "forkvm egress: this sandbox has no network access (no egress policy)\n";
    return "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: " +
           std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
}

}  // namespace

void AgentClient::handle_proxy_frame(std::uint32_t stream, proto::Message&& message) {
    std::shared_ptr<ProxyStreamHandler> handler;
    {
        const std::lock_guard lock(mu_);
        if (state_ == State::broken || state_ == State::closed) return;
        handler = proxy_handler_;
    }
    try {
        dispatch_proxy_frame(handler.get(), stream, std::move(message));
    } catch (const std::exception&) {
        // The handler failed (out of memory at worst) on the reader thread:
        // that stream ends, the channel and every other stream go on.
        (void)send_proxy(stream, proto::ProxyClose{"the host failed this stream", true});
    }
}

void AgentClient::dispatch_proxy_frame(ProxyStreamHandler* handler, std::uint32_t stream,
                                       proto::Message&& message) {
    if (auto* open = std::get_if<proto::ProxyOpen>(&message)) {
        if (handler) return handler->on_proxy_open(stream, open->initial_credit);
        // Nothing at all past the backlog: a guest opening streams without
        // reading the channel gets no replies queued for it.
        const std::lock_guard lock(mu_);
        if (!usable_locked() || queued_bytes_ > options_.max_proxy_backlog) return;
        const std::string refusal = no_egress_response();
        if (refusal.size() <= open->initial_credit)
            send_locked(stream, proto::ProxyData{proto::Bytes(refusal.begin(), refusal.end())});
        send_locked(stream, proto::ProxyClose{"no egress for this sandbox", false});
        return;
    }
    if (!handler) return;  // the rest of a stream refused above
    if (auto* data = std::get_if<proto::ProxyData>(&message))
        return handler->on_proxy_data(stream, std::move(data->data));
    if (auto* credit = std::get_if<proto::ProxyCredit>(&message))
        return handler->on_proxy_credit(stream, credit->bytes);
    if (auto* close = std::get_if<proto::ProxyClose>(&message))
        return handler->on_proxy_close(stream, *close);
}

void AgentClient::set_proxy_handler(std::shared_ptr<ProxyStreamHandler> handler) {
    const std::lock_guard lock(mu_);
    proxy_handler_ = std::move(handler);
}

ProxySend AgentClient::send_proxy(std::uint32_t stream, const proto::ProxyData& data) {
    const std::lock_guard lock(mu_);
    if (!usable_locked()) return ProxySend::unusable;
    if (queued_bytes_ > options_.max_proxy_backlog) {
        proxy_backlogged_ = true;
        return ProxySend::backlogged;
    }
    send_locked(stream, data);
    return ProxySend::sent;
}

bool AgentClient::send_proxy(std::uint32_t stream, const proto::ProxyCredit& credit) {
    const std::lock_guard lock(mu_);
    if (!usable_locked() || queued_bytes_ > 4 * options_.max_proxy_backlog) return false;
    send_locked(stream, credit);
    return true;
}

bool AgentClient::send_proxy(std::uint32_t stream, const proto::ProxyClose& close) {
    const std::lock_guard lock(mu_);
    if (!usable_locked() || queued_bytes_ > 4 * options_.max_proxy_backlog) return false;
    send_locked(stream, close);
    return true;
}

void AgentClient::dispatch_locked(Pending& p, proto::Message&& message, AgentClock::time_point now) {
    const auto finish = [&] {
        p.terminal = std::move(message);
        p.done = true;
        p.replied_at = now;
        pending_.erase(p.id);
    };
    const auto violation = [&](std::string_view what) {
        fail_all_locked(State::broken, AgentErrorCode::broken,
                        fmt::format("{} for {} request {}", what, op_name(p.op), p.id));
    };
    // Accepts output against the stream's window: the agent may never send
    // more than the credit it was given.
    const auto accept_data = [&](std::size_t stream, proto::Bytes& data) {
        if (data.size() > p.window[stream]) {
            violation(fmt::format("{} bytes of data beyond the {} bytes of credit granted", data.size(),
                                  p.window[stream]));
            return;
        }
        p.window[stream] -= data.size();
        proto::Bytes& into = p.data[stream];
        if (into.empty()) {
            into = std::move(data);
        } else {
            into.insert(into.end(), data.begin(), data.end());
        }
    };

    if (std::holds_alternative<proto::Error>(message)) return finish();
    switch (p.op) {
        case op_ping:
            if (const auto* pong = std::get_if<proto::Pong>(&message)) {
                if (pong->nonce != p.nonce) return violation("pong with a wrong nonce");
                return finish();
            }
            break;
        case op_exec:
            if (const auto* started = std::get_if<proto::ExecStarted>(&message)) {
                if (p.started) return violation("a second exec_started");
                p.started = true;
                p.pid = started->pid;
                return;
            }
            if (auto* output = std::get_if<proto::ExecOutput>(&message)) {
                if (!p.started) return violation("exec_output before exec_started");
                return accept_data(static_cast<std::size_t>(output->stream), output->data);
            }
            if (std::holds_alternative<proto::ExecExit>(message)) {
                if (!p.started) return violation("exec_exit before exec_started");
                return finish();
            }
            break;
        case op_read:
            if (auto* data = std::get_if<proto::FileData>(&message)) {
                p.received += data->data.size();
                return accept_data(0, data->data);
            }
            if (const auto* end = std::get_if<proto::FileEnd>(&message)) {
                if (end->total_bytes != p.received)
                    return violation(
                        fmt::format("file_end says {} bytes but {} arrived", end->total_bytes, p.received));
                return finish();
            }
            break;
        case op_write:
            if (const auto* credit = std::get_if<proto::Credit>(&message)) {
                if (credit->stream != proto::StreamId::file_data)
                    return violation("credit for an exec stream");
                p.send_credit = saturating_add(p.send_credit, credit->bytes);
                return;
            }
            if (std::holds_alternative<proto::Ok>(message)) return finish();
            break;
        case op_stat:
            if (std::holds_alternative<proto::StatResult>(message)) return finish();
            break;
        case op_list:
            if (std::holds_alternative<proto::DirEntries>(message)) return finish();
            break;
        case op_exists:
            if (std::holds_alternative<proto::Bool>(message)) return finish();
            break;
        default:
            if (std::holds_alternative<proto::Ok>(message)) return finish();
            break;
    }
    violation(fmt::format("unexpected {}", proto::message_type_name(proto::message_type(message))));
}

// ---- writer ----------------------------------------------------------------

void AgentClient::writer_loop() {
    std::unique_lock lock(mu_);
    while (true) {
        cv_.wait(lock, [this] { return !usable_locked() || !out_.empty(); });
        if (!usable_locked()) return;
        proto::Bytes batch;
        batch.swap(out_);
        lock.unlock();
        const std::string error = write_all(batch);
        lock.lock();
        queued_bytes_ -= batch.size();
        cv_.notify_all();
        if (!error.empty()) {
            if (!stopping_) fail_all_locked(State::closed, AgentErrorCode::closed, error);
            return;
        }
        if (proxy_backlogged_ && queued_bytes_ <= options_.max_proxy_backlog / 2) {
            // Proxy data waits for room: the handler sends it now.
            proxy_backlogged_ = false;
            const std::shared_ptr<ProxyStreamHandler> handler = proxy_handler_;
            lock.unlock();
            try {
                if (handler) handler->on_proxy_writable();
            } catch (const std::exception&) {  // NOLINT(bugprone-empty-catch): its streams time out
            }
            lock.lock();
        }
    }
}

std::string AgentClient::write_all(ByteView data) {
    std::size_t done = 0;
    while (done < data.size()) {
        const std::uint8_t* at = data.data() + done;
        const std::size_t left = data.size() - done;
        const ssize_t n =
            is_socket_ ? ::send(fd_.get(), at, left, MSG_NOSIGNAL) : ::write(fd_.get(), at, left);
        if (n > 0) {
            done += static_cast<std::size_t>(n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            std::array<pollfd, 2> fds{pollfd{fd_.get(), POLLOUT, 0}, pollfd{wake_fd_.get(), POLLIN, 0}};
            if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) return "poll: " + errno_text(errno);
            if (fds[1].revents != 0) return "stopped";
            continue;
        }
        return "write to the agent: " + errno_text(n < 0 ? errno : EIO);
    }
    return {};
}

}  // namespace forkvm::vmm
