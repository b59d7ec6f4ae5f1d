#pragma once
// AgentClient: the host side of the agent channel (docs/agent-protocol.md,
// "Host side"). One client per VM, over the connected stream socket that the
// VM process bridges to the guest's UART.
//
// Threads: a reader thread decodes frames and files each one with the
// request it answers; a writer thread owns every write() (so nobody blocks
// on a full socket while holding a lock, and control frames such as credit
// grants never wait for a caller). Public calls block the calling thread
// until their reply, an error or their deadline; any number of threads may
// call concurrently. Streaming callbacks (exec output, read_file sinks,
// write_file sources) run on the calling thread, never on the reader, so a
// slow consumer only holds back its own stream (through credits) and never
// the pings of others.
//
// Errors: every call throws AgentError (vmm/agent_error.hpp). The guest is
// untrusted: whatever it sends, the host neither crashes nor waits past a
// deadline, and holds at most one frame (max_payload) plus the credit window
// of each stream plus the caller's own buffering caps per request.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "guest/protocol/messages.hpp"
#include "vmm/agent_error.hpp"
#include "vmm/unique_fd.hpp"

namespace forkvm::vmm {

using AgentClock = std::chrono::steady_clock;

// When a call gives up: an absolute time point, a timeout from now, or
// (default-constructed) the client's default_timeout from the call's start.
class Deadline {
public:
    Deadline() noexcept = default;
    Deadline(AgentClock::time_point at) noexcept : at_(at) {}  // NOLINT(google-explicit-constructor)
    template <class Rep, class Period>
    Deadline(std::chrono::duration<Rep, Period> timeout)  // NOLINT(google-explicit-constructor)
        : at_(AgentClock::now() + std::chrono::duration_cast<AgentClock::duration>(timeout)) {}

    [[nodiscard]] AgentClock::time_point resolve(AgentClock::duration default_timeout) const {
        return at_ ? *at_ : AgentClock::now() + default_timeout;
    }

private:
    std::optional<AgentClock::time_point> at_;
};

struct AgentClientOptions {
    // Largest incoming payload accepted (the decoder's cap, <= proto::kMaxPayload);
    // a bigger declared length marks the client broken before it is buffered.
    std::uint32_t max_payload = proto::kMaxPayload;
    // Credit per stream given to the agent for exec output and file reads;
    // it is also the most unconsumed data held per stream.
    std::uint32_t initial_credit = 64 * 1024;
    // Used by calls made with a default-constructed Deadline.
    std::chrono::milliseconds default_timeout{30'000};
    // Cap per stream for exec_buffered() and for read_file() into memory.
    std::size_t max_buffered_bytes = 16 * 1024 * 1024;
    // Size of the file_data frames of an upload (clamped to what fits a frame).
    std::uint32_t upload_chunk = 32 * 1024;
    // Requests in flight at once; one more fails with `busy`.
    std::size_t max_in_flight = 256;
    // Bytes queued for the agent above which proxy stream frames are not
    // queued (send_proxy returns false): proxy streams are the one flow the
    // guest starts, so a guest that opens streams and never reads the
    // channel must not make the host queue replies without bound.
    std::size_t max_proxy_backlog = 1024 * 1024;
};

// What the agent announced in its Ready frame.
struct AgentInfo {
    std::uint32_t protocol_version = 0;
    std::string agent_version;
    std::uint64_t capabilities = 0;  // proto::kCapExec | kCapFiles | kCapCredit
};

struct PingResult {
    std::chrono::nanoseconds rtt{};        // measured on the host, request queued -> pong received
    std::uint64_t agent_monotonic_ns = 0;  // the agent's CLOCK_MONOTONIC
};

struct ExecRequest {
    std::vector<std::string> argv;
    std::vector<std::string> env;            // "K=V"
    std::string cwd;                         // "" = the agent's default
    std::string user;                        // "" = the default unprivileged user
    std::uint32_t timeout_ms = 0;            // enforced by the agent; 0 = none
    std::string stdin_data;                  // written to stdin, which is then closed
    std::uint64_t stdout_cap = 1024 * 1024;  // bytes the agent sends at most; more sets *_truncated
    std::uint64_t stderr_cap = 1024 * 1024;
};

using ByteView = std::span<const std::uint8_t>;

// All optional. Called on the thread that called exec(), in arrival order
// per stream; credit for the bytes is granted back when the callback returns.
struct ExecCallbacks {
    std::function<void(std::uint32_t pid)> on_started;
    std::function<void(ByteView data)> on_stdout;
    std::function<void(ByteView data)> on_stderr;
};

struct ExecResult {
    std::uint32_t pid = 0;
    std::int32_t exit_code = -1;  // -1 if killed by a signal
    std::int32_t term_signal = 0;
    bool timed_out = false;         // the agent's timeout_ms expired
    bool cancelled = false;         // the caller's stop_token was triggered
    bool stdout_truncated = false;  // output beyond the cap was dropped
    bool stderr_truncated = false;
    std::chrono::microseconds duration{};  // measured by the agent
};

struct BufferedExecResult : ExecResult {
    std::string stdout_data;
    std::string stderr_data;
};

struct ReadFileRequest {
    std::string path;
    std::uint64_t offset = 0;
    std::uint64_t max_bytes = 0;  // 0 = to end of file
};

struct ReadFileResult {
    std::uint64_t total_bytes = 0;
    bool eof = false;  // stopped at end of file (not at max_bytes)
};

struct ReadFileData {
    std::vector<std::uint8_t> data;
    bool eof = false;
};

struct WriteFileRequest {
    std::string path;
    std::uint32_t mode = 0644;
    bool create_parents = false;
    bool append = false;
};

// Receives file data (read_file). Credit is granted back when it returns.
using DataSink = std::function<void(ByteView data)>;
// Fills `buffer` with the next upload bytes and returns how many (at least 1
// until the declared total is reached; 0 before that aborts the upload).
using DataSource = std::function<std::size_t(std::span<std::uint8_t> buffer)>;

// The egress proxy streams the agent opens (docs/agent-protocol.md, "Proxy
// streams"). Called on the client's reader thread without its lock held:
// hand the work off, never block. Stream ids are the frames' ids.
class ProxyStreamHandler {
public:
    virtual ~ProxyStreamHandler() = default;
    virtual void on_proxy_open(std::uint32_t stream, std::uint32_t initial_credit) = 0;
    virtual void on_proxy_data(std::uint32_t stream, proto::Bytes data) = 0;
    virtual void on_proxy_credit(std::uint32_t stream, std::uint32_t bytes) = 0;
    virtual void on_proxy_close(std::uint32_t stream, const proto::ProxyClose& close) = 0;
    // The output queue drained after send_proxy(ProxyData) answered
    // `backlogged`: data may be sent again. Called on the writer thread
    // without the client's lock held.
    virtual void on_proxy_writable() {}
};

// What became of a proxy stream's data frame.
enum class ProxySend : std::uint8_t {
    sent,
    backlogged,  // not sent: the output queue is over max_proxy_backlog; retry on on_proxy_writable()
    unusable,    // not sent: the channel is closed or broken
};

class AgentClient {
public:
    enum class State : std::uint8_t {
        healthy,
        unhealthy,  // a deadline was missed; calls still work, callers may want to recycle the VM
        broken,     // protocol violation: every call fails with `broken` and broken_reason()
        closed,     // the agent closed the channel or close() was called
    };

    // Takes a connected stream socket (made non-blocking here) and starts the
    // reader and writer threads. Throws SysError if they cannot be set up.
    explicit AgentClient(UniqueFd fd, AgentClientOptions options = {});
    // close(), then waits until every call that is still running in another
    // thread has returned (they fail with `closed`). Never destroy the client
    // from one of its own streaming callbacks.
    ~AgentClient();
    AgentClient(const AgentClient&) = delete;
    AgentClient& operator=(const AgentClient&) = delete;

    // Stops both threads, closes the socket and fails every pending call with
    // `closed`. Idempotent and thread-safe.
    void close();

    [[nodiscard]] State state() const;
    [[nodiscard]] std::string broken_reason() const;  // "" unless broken
    // Frames for request ids nobody waits for (late replies after a timeout, or junk).
    [[nodiscard]] std::uint64_t unknown_replies() const;
    [[nodiscard]] std::size_t in_flight() const;
    // Bytes queued for the agent, not yet written.
    [[nodiscard]] std::size_t queued_bytes() const;

    // The agent's Ready frame (returns at once if it has already arrived).
    AgentInfo wait_ready(Deadline deadline = {});

    PingResult ping(Deadline deadline = {});

    // Runs a command. A stop request on `stop` sends `cancel`: the agent kills
    // the process group and exec() returns its exit (cancelled = true). An
    // exception from a callback cancels the command and propagates.
    ExecResult exec(const ExecRequest& request, const ExecCallbacks& callbacks = {}, Deadline deadline = {},
                    std::stop_token stop = {});
    // exec() collecting output; each stream is kept up to min(cap,
    // max_buffered_bytes) (the cap is sent to the agent, which drops the rest).
    BufferedExecResult exec_buffered(ExecRequest request, Deadline deadline = {}, std::stop_token stop = {});

    // Streams a file to `sink`. A stop request cancels it (throws `cancelled`).
    ReadFileResult read_file(const ReadFileRequest& request, const DataSink& sink, Deadline deadline = {},
                             std::stop_token stop = {});
    // Reads into memory; more than max_buffered_bytes throws `too_large`.
    ReadFileData read_file(const ReadFileRequest& request, Deadline deadline = {}, std::stop_token stop = {});

    void write_file(const WriteFileRequest& request, ByteView data, Deadline deadline = {},
                    std::stop_token stop = {});
    // Uploads exactly total_size bytes pulled from `source`, within the
    // agent's credit grants.
    void write_file(const WriteFileRequest& request, std::uint64_t total_size, const DataSource& source,
                    Deadline deadline = {}, std::stop_token stop = {});

    proto::StatResult stat(const std::string& path, bool follow_symlinks = true, Deadline deadline = {});
    proto::DirEntries list_dir(const std::string& path, std::uint32_t max_entries = 10'000,
                               Deadline deadline = {});
    bool exists(const std::string& path, Deadline deadline = {});
    void remove(const std::string& path, bool recursive = false, Deadline deadline = {});
    void rename(const std::string& from, const std::string& to, Deadline deadline = {});
    void mkdir(const std::string& path, bool parents = false, std::uint32_t mode = 0755,
               Deadline deadline = {});

    struct Pending;  // one request in flight (defined in agent_client.cpp)

    [[nodiscard]] static std::string_view state_name(State state) noexcept;

    // Where the agent's proxy streams go. Without a handler every stream is
    // refused at once: its client reads a 403 saying the sandbox has no
    // egress, then EOF.
    void set_proxy_handler(std::shared_ptr<ProxyStreamHandler> handler);
    // Data for a proxy stream (see ProxySend): not queued while the output
    // queue is over max_proxy_backlog, so a guest that does not read its
    // channel never makes the host buffer upstream bytes without bound.
    ProxySend send_proxy(std::uint32_t stream, const proto::ProxyData& data);
    // Credit and close frames: a few tiny frames per stream, so they go out
    // past max_proxy_backlog, up to four times it (beyond that the guest has
    // stopped reading and loses them). False when not sent.
    bool send_proxy(std::uint32_t stream, const proto::ProxyCredit& credit);
    bool send_proxy(std::uint32_t stream, const proto::ProxyClose& close);

private:
    class CallScope;
    class RequestScope;
    friend class CallScope;
    friend class RequestScope;

    // Routes a proxy_* frame (no lock held on entry).
    void handle_proxy_frame(std::uint32_t stream, proto::Message&& message);
    void dispatch_proxy_frame(ProxyStreamHandler* handler, std::uint32_t stream, proto::Message&& message);
    // Registers a request under a fresh id and queues its first frame.
    template <class M>
    std::shared_ptr<Pending> start(int op, const M& message, std::uint32_t initial_credit = 0,
                                   std::uint64_t nonce = 0);
    template <class Reply, class M>
    Reply simple_call(int op, const M& message, Deadline deadline);
    // Waits until `ready()`; throws the request's failure or, at the
    // deadline, `timeout` (marking the client unhealthy).
    template <class Ready>
    void wait_for(std::unique_lock<std::mutex>& lock, Pending& p, AgentClock::time_point deadline,
                  Ready ready);
    // The terminal reply; an `error` reply is thrown as AgentError.
    proto::Message wait_terminal(std::unique_lock<std::mutex>& lock, Pending& p,
                                 AgentClock::time_point deadline);
    template <class M>
    void send_locked(std::uint32_t id, const M& message);
    void send_file_data_locked(std::uint32_t id, ByteView data);
    // Records consumed bytes and grants them back (unless the write queue is
    // backed up: then later, from the call's wait loop).
    void grant_locked(Pending& p, std::size_t stream, std::size_t bytes);
    void flush_grants_locked(Pending& p);
    [[nodiscard]] bool grants_sendable_locked(const Pending& p) const noexcept;
    bool send_cancel_if_requested_locked(Pending& p);
    void request_cancel(Pending& p);
    void abandon(Pending& p);
    void throw_if_unusable_locked() const;
    [[nodiscard]] bool usable_locked() const noexcept;

    void reader_loop();
    void writer_loop();
    // "" when all was written; else why not (ignored once stopping).
    std::string write_all(ByteView data);
    void handle_frame(proto::Frame&& frame, AgentClock::time_point now);
    void dispatch_locked(Pending& p, proto::Message&& message, AgentClock::time_point now);
    void fail_all_locked(State state, AgentErrorCode code, const std::string& reason);
    void signal_stop() noexcept;

    UniqueFd fd_;
    UniqueFd wake_fd_;  // eventfd: readable once the threads must stop
    bool is_socket_ = false;
    AgentClientOptions options_;

    mutable std::mutex mu_;
    std::condition_variable cv_;  // every state change; waiters re-check their predicate
    State state_ = State::healthy;
    std::string reason_;
    bool stopping_ = false;
    std::optional<AgentInfo> ready_;
    std::map<std::uint32_t, std::shared_ptr<Pending>> pending_;
    std::uint32_t next_id_ = 1;
    std::uint64_t next_nonce_ = 1;
    std::once_flag close_once_;
    std::uint64_t unknown_replies_ = 0;
    std::shared_ptr<ProxyStreamHandler> proxy_handler_;
    bool proxy_backlogged_ = false;  // a data frame was refused: tell the handler when the queue drains
    std::size_t active_calls_ = 0;
    proto::Bytes out_;              // frames queued for the writer
    std::size_t queued_bytes_ = 0;  // out_ plus the batch being written

    std::thread reader_;
    std::thread writer_;
};

}  // namespace forkvm::vmm
