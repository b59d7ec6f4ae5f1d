// AgentClient against a scripted fake agent: the test plays the agent on the
// other end of a socketpair with the protocol library. Client calls run in
// std::async; the fake agent runs in the test thread (doctest assertions stay
// on one thread).

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <doctest/doctest.h>
#include <future>
#include <memory>
#include <set>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "guest/protocol/messages.hpp"
#include "vmm/agent_client.hpp"

using namespace std::chrono_literals;
using forkvm::UniqueFd;
using forkvm::vmm::AgentClient;
using forkvm::vmm::AgentClientOptions;
using forkvm::vmm::AgentError;
using forkvm::vmm::AgentErrorCode;
namespace proto = forkvm::proto;
namespace vmm = forkvm::vmm;

namespace {

using Clock = std::chrono::steady_clock;

// The agent's end of the channel: blocking writes, reads with a timeout.
class FakeAgent {
public:
    explicit FakeAgent(UniqueFd fd) : fd_(std::move(fd)) {}

    template <class M>
    void send(std::uint32_t id, const M& message) {
        proto::Result<proto::Bytes> bytes = proto::encode_message(id, message);
        REQUIRE(bytes.ok());
        send_raw(*bytes);
    }

    void send_raw(proto::ByteSpan data) {
        std::size_t done = 0;
        while (done < data.size()) {
            const ssize_t n = ::send(fd_.get(), data.data() + done, data.size() - done, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR) continue;
            REQUIRE(n > 0);
            done += static_cast<std::size_t>(n);
        }
    }

    // The next frame from the host, or nullopt after `timeout` / EOF / garbage.
    std::optional<proto::Frame> recv(std::chrono::milliseconds timeout = 5000ms) {
        const auto deadline = Clock::now() + timeout;
        while (true) {
            while (!buffer_.empty()) {
                const std::size_t used = decoder_.feed(buffer_);
                buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(used));
                if (auto frame = decoder_.take_frame()) return frame;
                if (decoder_.failed() || used == 0) return std::nullopt;
            }
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            if (left.count() <= 0) return std::nullopt;
            pollfd pfd{fd_.get(), POLLIN, 0};
            if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
            std::uint8_t chunk[65536];
            const ssize_t n = ::read(fd_.get(), chunk, sizeof(chunk));
            if (n <= 0) return std::nullopt;
            buffer_.insert(buffer_.end(), chunk, chunk + n);
        }
    }

    template <class M>
    M expect(std::uint32_t& id) {
        std::optional<proto::Frame> frame = recv();
        REQUIRE(frame.has_value());
        REQUIRE(proto::message_type_name(frame->type) == proto::message_type_name(M::kType));
        id = frame->request_id;
        proto::Result<M> m = proto::decode_message<M>(*frame);
        REQUIRE(m.ok());
        return std::move(m).value();
    }

    void close() { fd_.reset(); }
    [[nodiscard]] int fd() const { return fd_.get(); }

private:
    UniqueFd fd_;
    proto::FrameDecoder decoder_;
    proto::Bytes buffer_;
};

struct Pair {
    std::unique_ptr<AgentClient> client;
    std::unique_ptr<FakeAgent> agent;
};

Pair make_pair(AgentClientOptions options = {}) {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    // A fake agent's send fails instead of hanging if the client stops reading.
    const timeval send_timeout{5, 0};
    REQUIRE(::setsockopt(sv[1], SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof(send_timeout)) == 0);
    Pair p;
    p.client = std::make_unique<AgentClient>(UniqueFd(sv[0]), options);
    p.agent = std::make_unique<FakeAgent>(UniqueFd(sv[1]));
    return p;
}

// Runs f() and returns the AgentError it throws (fails the test if none).
template <class F>
AgentError catch_agent_error(F&& f) {
    try {
        f();
    } catch (const AgentError& e) {
        return e;
    }
    FAIL("no AgentError thrown");
    return AgentError(AgentErrorCode::internal, "unreachable");
}

template <class T>
AgentError future_error(std::future<T>& future) {
    return catch_agent_error([&] { (void)future.get(); });
}

// Polls `condition` for up to 10 s (tests never wait unbounded).
template <class F>
bool wait_until(F&& condition) {
    const auto until = Clock::now() + 10s;
    while (!condition()) {
        if (Clock::now() > until) return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

vmm::ExecRequest command(std::vector<std::string> argv) {
    vmm::ExecRequest req;
    req.argv = std::move(argv);
    return req;
}

proto::Bytes all_byte_values(std::size_t size) {
    proto::Bytes data(size);
    for (std::size_t i = 0; i < size; ++i) data[i] = static_cast<std::uint8_t>((i * 7 + i / 256) & 0xFFU);
    return data;
}

}  // namespace

TEST_CASE("vmm: agent client returns the agent's ready info") {
    Pair p = make_pair();
    p.agent->send(0, proto::Ready{1, "agent-1.2", proto::kCapExec | proto::kCapFiles});
    const vmm::AgentInfo info = p.client->wait_ready(2s);
    CHECK(info.protocol_version == 1);
    CHECK(info.agent_version == "agent-1.2");
    CHECK(info.capabilities == (proto::kCapExec | proto::kCapFiles));
    CHECK(p.client->state() == AgentClient::State::healthy);
    // Asking again answers at once.
    CHECK(p.client->wait_ready(1ms).agent_version == "agent-1.2");
}

TEST_CASE("vmm: agent client wait_ready times out without ready and marks the client unhealthy") {
    Pair p = make_pair();
    const auto t0 = Clock::now();
    const AgentError e = catch_agent_error([&] { (void)p.client->wait_ready(200ms); });
    CHECK(e.code() == AgentErrorCode::timeout);
    CHECK(Clock::now() - t0 >= 190ms);
    CHECK(p.client->state() == AgentClient::State::unhealthy);
}

TEST_CASE("vmm: agent client ready with a foreign protocol version breaks the channel") {
    Pair p = make_pair();
    p.agent->send(0, proto::Ready{2, "future", 0});
    const AgentError e = catch_agent_error([&] { (void)p.client->wait_ready(2s); });
    CHECK(e.code() == AgentErrorCode::broken);
    CHECK(p.client->broken_reason().find("version 2") != std::string::npos);
}

TEST_CASE("vmm: agent client ping measures the round trip on the host") {
    Pair p = make_pair();
    auto ping = std::async(std::launch::async, [&] { return p.client->ping(5s); });
    std::uint32_t id = 0;
    const proto::Ping req = p.agent->expect<proto::Ping>(id);
    CHECK(id != 0);
    std::this_thread::sleep_for(30ms);
    p.agent->send(id, proto::Pong{req.nonce, 123456789});
    const vmm::PingResult r = ping.get();
    CHECK(r.rtt >= 30ms);
    CHECK(r.agent_monotonic_ns == 123456789);
    CHECK(p.client->in_flight() == 0);
}

TEST_CASE("vmm: agent client serves concurrent pings from several threads with unique ids") {
    Pair p = make_pair();
    std::atomic<bool> stop{false};
    std::set<std::uint32_t> ids;
    std::size_t answered = 0;
    // A plain responder thread (no doctest macros off the main thread).
    std::thread responder([&] {
        while (!stop) {
            std::optional<proto::Frame> f = p.agent->recv(50ms);
            if (!f || f->type != proto::MessageType::ping) continue;
            const proto::Result<proto::Ping> ping = proto::decode_message<proto::Ping>(*f);
            if (!ping) continue;
            ids.insert(f->request_id);
            ++answered;
            p.agent->send(f->request_id, proto::Pong{ping->nonce, answered});
        }
    });
    constexpr int kThreads = 4;
    constexpr int kPings = 25;
    std::vector<std::future<int>> workers;
    for (int t = 0; t < kThreads; ++t) {
        workers.push_back(std::async(std::launch::async, [&] {
            int ok = 0;
            for (int i = 0; i < kPings; ++i) {
                if (p.client->ping(5s).agent_monotonic_ns > 0) ++ok;
            }
            return ok;
        }));
    }
    int total = 0;
    for (auto& w : workers) total += w.get();
    stop = true;
    responder.join();
    CHECK(total == kThreads * kPings);
    CHECK(answered == static_cast<std::size_t>(kThreads * kPings));
    CHECK(ids.size() == static_cast<std::size_t>(kThreads * kPings));
    CHECK(ids.count(0) == 0);
    CHECK(p.client->state() == AgentClient::State::healthy);
}

TEST_CASE("vmm: agent client exec streams output in order and returns the exit") {
    Pair p = make_pair();
    std::vector<std::string> events;
    std::mutex events_mu;
    const auto record = [&](std::string e) {
        const std::lock_guard lock(events_mu);
        events.push_back(std::move(e));
    };
    vmm::ExecCallbacks cb;
    cb.on_started = [&](std::uint32_t pid) { record("started " + std::to_string(pid)); };
    cb.on_stdout = [&](vmm::ByteView d) { record("out " + std::string(d.begin(), d.end())); };
    cb.on_stderr = [&](vmm::ByteView d) { record("err " + std::string(d.begin(), d.end())); };
    vmm::ExecRequest req;
    req.argv = {"/bin/echo", "hi"};
    req.env = {"A=1"};
    req.cwd = "/tmp";
    req.timeout_ms = 1000;
    req.stdin_data = std::string("in\0put", 6);
    req.stdout_cap = 100;
    req.stderr_cap = 200;
    auto exec = std::async(std::launch::async, [&] { return p.client->exec(req, cb, 5s); });

    std::uint32_t id = 0;
    const proto::ExecStart start = p.agent->expect<proto::ExecStart>(id);
    CHECK(start.argv == req.argv);
    CHECK(start.env == req.env);
    CHECK(start.cwd == "/tmp");
    CHECK(start.timeout_ms == 1000);
    CHECK(start.stdin_data == proto::Bytes{'i', 'n', 0, 'p', 'u', 't'});
    CHECK(start.stdout_cap == 100);
    CHECK(start.stderr_cap == 200);
    CHECK(start.initial_credit == AgentClientOptions{}.initial_credit);

    p.agent->send(id, proto::ExecStarted{4242});
    // Each frame is awaited (via its credit grant) so the callbacks see them one by one.
    const auto output = [&](proto::StreamId s, std::string text) {
        p.agent->send(id, proto::ExecOutput{s, proto::Bytes(text.begin(), text.end())});
        std::uint32_t cid = 0;
        const proto::Credit c = p.agent->expect<proto::Credit>(cid);
        CHECK(cid == id);
        CHECK(c.stream == s);
        CHECK(c.bytes == text.size());
    };
    output(proto::StreamId::exec_stdout, "one");
    output(proto::StreamId::exec_stderr, "warn");
    output(proto::StreamId::exec_stdout, "two");
    p.agent->send(id, proto::ExecExit{3, 0, false, true, false, 1500});
    const vmm::ExecResult r = exec.get();
    CHECK(r.pid == 4242);
    CHECK(r.exit_code == 3);
    CHECK(r.term_signal == 0);
    CHECK_FALSE(r.timed_out);
    CHECK(r.stdout_truncated);
    CHECK_FALSE(r.stderr_truncated);
    CHECK_FALSE(r.cancelled);
    CHECK(r.duration == 1500us);
    CHECK(events == std::vector<std::string>{"started 4242", "out one", "err warn", "out two"});
}

TEST_CASE("vmm: agent client grants back exactly the output it consumed") {
    AgentClientOptions opts;
    opts.initial_credit = 16;
    Pair p = make_pair(opts);
    std::string got;
    vmm::ExecCallbacks cb;
    cb.on_stdout = [&](vmm::ByteView d) { got.append(d.begin(), d.end()); };
    auto exec =
        std::async(std::launch::async, [&] { return p.client->exec(command({"/bin/yes"}), cb, 10s); });
    std::uint32_t id = 0;
    const proto::ExecStart start = p.agent->expect<proto::ExecStart>(id);
    REQUIRE(start.initial_credit == 16);
    p.agent->send(id, proto::ExecStarted{1});

    // Behave as the agent must: never send beyond the window.
    const std::string payload = [] {
        std::string s;
        for (int i = 0; i < 100; ++i) s.push_back(static_cast<char>('a' + i % 26));
        return s;
    }();
    std::uint64_t window = 16;
    std::uint64_t granted = 0;
    std::size_t sent = 0;
    while (sent < payload.size() || granted < payload.size()) {
        if (sent < payload.size() && window > 0) {
            const std::size_t n = std::min<std::size_t>({5, window, payload.size() - sent});
            p.agent->send(
                id, proto::ExecOutput{proto::StreamId::exec_stdout,
                                      proto::Bytes(payload.begin() + static_cast<std::ptrdiff_t>(sent),
                                                   payload.begin() + static_cast<std::ptrdiff_t>(sent + n))});
            sent += n;
            window -= n;
            continue;
        }
        std::uint32_t cid = 0;
        const proto::Credit c = p.agent->expect<proto::Credit>(cid);
        REQUIRE(cid == id);
        REQUIRE(c.stream == proto::StreamId::exec_stdout);
        window += c.bytes;
        granted += c.bytes;
        CHECK(window <= 16);  // the window never grows past initial_credit
    }
    p.agent->send(id, proto::ExecExit{0, 0, false, false, false, 1});
    CHECK(exec.get().exit_code == 0);
    CHECK(got == payload);
    CHECK(granted == payload.size());
    CHECK_FALSE(p.agent->recv(100ms).has_value());  // no spurious grants after the exit
}

TEST_CASE("vmm: agent client output beyond the granted credit breaks the channel") {
    AgentClientOptions opts;
    opts.initial_credit = 16;
    Pair p = make_pair(opts);
    auto exec =
        std::async(std::launch::async, [&] { return p.client->exec(command({"/bin/yes"}), {}, 10s); });
    std::uint32_t id = 0;
    (void)p.agent->expect<proto::ExecStart>(id);
    p.agent->send(id, proto::ExecStarted{1});
    p.agent->send(id, proto::ExecOutput{proto::StreamId::exec_stderr, proto::Bytes(17, 'x')});
    const AgentError e = future_error(exec);
    CHECK(e.code() == AgentErrorCode::broken);
    CHECK(p.client->state() == AgentClient::State::broken);
    CHECK(p.client->broken_reason().find("credit") != std::string::npos);
    // Every later call fails at once with the same reason.
    const auto t0 = Clock::now();
    const AgentError later = catch_agent_error([&] { (void)p.client->ping(10s); });
    CHECK(later.code() == AgentErrorCode::broken);
    CHECK(later.message() == p.client->broken_reason());
    CHECK(Clock::now() - t0 < 5s);
}

TEST_CASE("vmm: agent client garbage bytes break the channel and fail pending calls promptly") {
    Pair p = make_pair();
    auto ping1 = std::async(std::launch::async, [&] { return p.client->ping(20s); });
    auto ping2 = std::async(std::launch::async, [&] { return p.client->ping(20s); });
    std::uint32_t id = 0;
    (void)p.agent->expect<proto::Ping>(id);
    (void)p.agent->expect<proto::Ping>(id);
    const auto t0 = Clock::now();
    const std::string junk = "hello from a confused guest\r\n";
    p.agent->send_raw(proto::ByteSpan(reinterpret_cast<const std::uint8_t*>(junk.data()), junk.size()));
    CHECK(future_error(ping1).code() == AgentErrorCode::broken);
    CHECK(future_error(ping2).code() == AgentErrorCode::broken);
    CHECK(Clock::now() - t0 < 10s);  // far before the 20 s deadline
    CHECK(p.client->broken_reason().find("bad_magic") != std::string::npos);
    CHECK(p.client->in_flight() == 0);
}

TEST_CASE("vmm: agent client a corrupted frame (CRC) breaks the channel") {
    Pair p = make_pair();
    auto ping = std::async(std::launch::async, [&] { return p.client->ping(20s); });
    std::uint32_t id = 0;
    const proto::Ping req = p.agent->expect<proto::Ping>(id);
    proto::Result<proto::Bytes> frame = proto::encode_message(id, proto::Pong{req.nonce, 1});
    REQUIRE(frame.ok());
    frame->back() ^= 0x01U;
    p.agent->send_raw(*frame);
    CHECK(future_error(ping).code() == AgentErrorCode::broken);
    CHECK(p.client->broken_reason().find("crc_mismatch") != std::string::npos);
}

TEST_CASE("vmm: agent client an undecodable payload in a valid frame breaks the channel") {
    Pair p = make_pair();
    auto ping = std::async(std::launch::async, [&] { return p.client->ping(20s); });
    std::uint32_t id = 0;
    (void)p.agent->expect<proto::Ping>(id);
    const proto::Bytes short_payload = {1, 2, 3};  // a Pong needs 16 bytes
    proto::Result<proto::Bytes> frame = proto::encode_frame(proto::MessageType::pong, id, short_payload);
    REQUIRE(frame.ok());
    p.agent->send_raw(*frame);
    CHECK(future_error(ping).code() == AgentErrorCode::broken);
    CHECK(p.client->broken_reason().find("undecodable pong") != std::string::npos);
}

TEST_CASE("vmm: agent client a reply of the wrong type breaks the channel") {
    Pair p = make_pair();
    auto st = std::async(std::launch::async, [&] { return p.client->stat("/etc", true, 20s); });
    std::uint32_t id = 0;
    (void)p.agent->expect<proto::Stat>(id);
    p.agent->send(id, proto::Bool{true});
    CHECK(future_error(st).code() == AgentErrorCode::broken);
    CHECK(p.client->broken_reason().find("unexpected bool_result for stat") != std::string::npos);
}

TEST_CASE("vmm: agent client a pong with a wrong nonce breaks the channel") {
    Pair p = make_pair();
    auto ping = std::async(std::launch::async, [&] { return p.client->ping(20s); });
    std::uint32_t id = 0;
    const proto::Ping req = p.agent->expect<proto::Ping>(id);
    p.agent->send(id, proto::Pong{req.nonce + 1, 0});
    CHECK(future_error(ping).code() == AgentErrorCode::broken);
}

TEST_CASE("vmm: agent client a silent agent makes a call time out at its deadline") {
    Pair p = make_pair();
    const auto t0 = Clock::now();
    const AgentError e = catch_agent_error([&] { (void)p.client->ping(200ms); });
    CHECK(e.code() == AgentErrorCode::timeout);
    CHECK(Clock::now() - t0 >= 190ms);
    CHECK(p.client->state() == AgentClient::State::unhealthy);
    CHECK(p.client->in_flight() == 0);

    // The late pong is discarded harmlessly and the channel still works.
    std::uint32_t id = 0;
    const proto::Ping req = p.agent->expect<proto::Ping>(id);
    p.agent->send(id, proto::Pong{req.nonce, 1});
    auto ping = std::async(std::launch::async, [&] { return p.client->ping(5s); });
    std::uint32_t id2 = 0;
    const proto::Ping req2 = p.agent->expect<proto::Ping>(id2);
    CHECK(id2 != id);
    p.agent->send(id2, proto::Pong{req2.nonce, 2});
    CHECK(ping.get().agent_monotonic_ns == 2);
    CHECK(p.client->unknown_replies() == 1);
    CHECK(p.client->state() == AgentClient::State::unhealthy);
}

TEST_CASE("vmm: agent client an exec past its deadline times out and is cancelled") {
    Pair p = make_pair();
    auto exec = std::async(std::launch::async, [&] {
        return p.client->exec(command({"/bin/sleep", "9"}), {}, 200ms);
    });
    std::uint32_t id = 0;
    (void)p.agent->expect<proto::ExecStart>(id);
    p.agent->send(id, proto::ExecStarted{7});
    CHECK(future_error(exec).code() == AgentErrorCode::timeout);
    std::uint32_t cid = 0;
    (void)p.agent->expect<proto::Cancel>(cid);
    CHECK(cid == id);
}

TEST_CASE("vmm: agent client peer close fails pending and later calls with closed") {
    Pair p = make_pair();
    auto ping = std::async(std::launch::async, [&] { return p.client->ping(20s); });
    std::uint32_t id = 0;
    (void)p.agent->expect<proto::Ping>(id);
    p.agent->close();
    CHECK(future_error(ping).code() == AgentErrorCode::closed);
    CHECK(p.client->state() == AgentClient::State::closed);
    CHECK(catch_agent_error([&] { (void)p.client->exists("/x", 5s); }).code() == AgentErrorCode::closed);
}

TEST_CASE("vmm: agent client ignores replies for unknown request ids") {
    Pair p = make_pair();
    auto ping = std::async(std::launch::async, [&] { return p.client->ping(5s); });
    std::uint32_t id = 0;
    const proto::Ping req = p.agent->expect<proto::Ping>(id);
    p.agent->send(id + 1000, proto::Pong{req.nonce, 5});
    p.agent->send(0, proto::Ok{});
    p.agent->send(id + 7, proto::ExecOutput{proto::StreamId::exec_stdout, proto::Bytes(1000, 'z')});
    p.agent->send(id, proto::Pong{req.nonce, 6});
    CHECK(ping.get().agent_monotonic_ns == 6);
    CHECK(p.client->unknown_replies() == 3);
    CHECK(p.client->state() == AgentClient::State::healthy);
}

TEST_CASE("vmm: agent client maps an error reply to its code, errno and message") {
    Pair p = make_pair();
    auto st = std::async(std::launch::async, [&] { return p.client->stat("/nope", false, 5s); });
    std::uint32_t id = 0;
    const proto::Stat req = p.agent->expect<proto::Stat>(id);
    CHECK(req.path == "/nope");
    CHECK_FALSE(req.follow_symlinks);
    p.agent->send(id, proto::Error{proto::ErrorCode::not_found, 2, "/nope: No such file or directory"});
    const AgentError e = future_error(st);
    CHECK(e.code() == AgentErrorCode::not_found);
    CHECK(e.err() == 2);
    CHECK(e.message() == "/nope: No such file or directory");
    CHECK(std::string(e.what()).find("not_found") != std::string::npos);

    auto mk = std::async(std::launch::async, [&] { p.client->mkdir("/a/b", true, 0700, 5s); });
    const proto::Mkdir m = p.agent->expect<proto::Mkdir>(id);
    CHECK(m.path == "/a/b");
    CHECK(m.parents);
    CHECK(m.mode == 0700);
    p.agent->send(id, proto::Error{proto::ErrorCode::permission_denied, 13, "read-only"});
    const AgentError e2 = future_error(mk);
    CHECK(e2.code() == AgentErrorCode::permission_denied);
    CHECK(e2.err() == 13);
    // An error reply is an answer, not a fault of the channel.
    CHECK(p.client->state() == AgentClient::State::healthy);
}

TEST_CASE("vmm: agent client small file operations round-trip") {
    Pair p = make_pair();
    std::uint32_t id = 0;

    auto ex = std::async(std::launch::async, [&] { return p.client->exists("/etc/passwd", 5s); });
    CHECK(p.agent->expect<proto::Exists>(id).path == "/etc/passwd");
    p.agent->send(id, proto::Bool{true});
    CHECK(ex.get());

    auto ls = std::async(std::launch::async, [&] { return p.client->list_dir("/", 2, 5s); });
    const proto::ListDir l = p.agent->expect<proto::ListDir>(id);
    CHECK(l.max_entries == 2);
    proto::DirEntries entries;
    entries.entries = {{"bin", proto::FileType::directory, 0, 0755}, {"x", proto::FileType::file, 3, 0644}};
    entries.truncated = true;
    p.agent->send(id, entries);
    CHECK(ls.get() == entries);

    auto st = std::async(std::launch::async, [&] { return p.client->stat("/x", true, 5s); });
    (void)p.agent->expect<proto::Stat>(id);
    const proto::StatResult sr{proto::FileType::file, 0644, 3, 1234567, 1000, 1000};
    p.agent->send(id, sr);
    CHECK(st.get() == sr);

    auto rm = std::async(std::launch::async, [&] { p.client->remove("/x", true, 5s); });
    const proto::Remove r = p.agent->expect<proto::Remove>(id);
    CHECK(r.recursive);
    p.agent->send(id, proto::Ok{});
    rm.get();

    auto mv = std::async(std::launch::async, [&] { p.client->rename("/a", "/b", 5s); });
    const proto::Rename mvr = p.agent->expect<proto::Rename>(id);
    CHECK(mvr.from == "/a");
    CHECK(mvr.to == "/b");
    p.agent->send(id, proto::Ok{});
    mv.get();
}

TEST_CASE("vmm: agent client read_file streams 256 KiB of all byte values within credit") {
    AgentClientOptions opts;
    opts.initial_credit = 64 * 1024;
    Pair p = make_pair(opts);
    const proto::Bytes content = all_byte_values(256 * 1024);
    auto read = std::async(std::launch::async, [&] { return p.client->read_file({"/data.bin", 0, 0}, 10s); });
    std::uint32_t id = 0;
    const proto::ReadFile req = p.agent->expect<proto::ReadFile>(id);
    CHECK(req.path == "/data.bin");
    CHECK(req.initial_credit == 64 * 1024);
    std::uint64_t window = req.initial_credit;
    std::size_t sent = 0;
    while (sent < content.size()) {
        if (window == 0) {
            std::uint32_t cid = 0;
            const proto::Credit c = p.agent->expect<proto::Credit>(cid);
            REQUIRE(cid == id);
            REQUIRE(c.stream == proto::StreamId::file_data);
            window += c.bytes;
            continue;
        }
        const std::size_t n = std::min<std::size_t>({16 * 1024, window, content.size() - sent});
        p.agent->send(id,
                      proto::FileData{proto::Bytes(content.begin() + static_cast<std::ptrdiff_t>(sent),
                                                   content.begin() + static_cast<std::ptrdiff_t>(sent + n))});
        sent += n;
        window -= n;
    }
    p.agent->send(id, proto::FileEnd{content.size(), true});
    const vmm::ReadFileData got = read.get();
    CHECK(got.eof);
    CHECK(got.data == content);
}

TEST_CASE("vmm: agent client read_file into memory beyond max_buffered_bytes fails and cancels") {
    AgentClientOptions opts;
    opts.max_buffered_bytes = 100;
    Pair p = make_pair(opts);
    auto read = std::async(std::launch::async, [&] { return p.client->read_file({"/big", 0, 0}, 5s); });
    std::uint32_t id = 0;
    const proto::ReadFile req = p.agent->expect<proto::ReadFile>(id);
    CHECK(req.max_bytes == 101);
    p.agent->send(id, proto::FileData{proto::Bytes(101, 'b')});
    CHECK(future_error(read).code() == AgentErrorCode::too_large);
    std::uint32_t cid = 0;
    (void)p.agent->expect<proto::Cancel>(cid);
    CHECK(cid == id);
    CHECK(p.client->state() == AgentClient::State::healthy);
}

TEST_CASE("vmm: agent client read_file with a wrong file_end total breaks the channel") {
    Pair p = make_pair();
    auto read = std::async(std::launch::async, [&] { return p.client->read_file({"/f", 0, 0}, 5s); });
    std::uint32_t id = 0;
    (void)p.agent->expect<proto::ReadFile>(id);
    p.agent->send(id, proto::FileData{proto::Bytes(10, 'b')});
    p.agent->send(id, proto::FileEnd{11, true});
    CHECK(future_error(read).code() == AgentErrorCode::broken);
}

TEST_CASE("vmm: agent client write_file uploads 256 KiB within the agent's credit") {
    AgentClientOptions opts;
    opts.upload_chunk = 16 * 1024;
    Pair p = make_pair(opts);
    const proto::Bytes content = all_byte_values(256 * 1024);
    vmm::WriteFileRequest wreq{"/up.bin", 0600, true, false};
    auto write = std::async(std::launch::async, [&] { p.client->write_file(wreq, content, 10s); });
    std::uint32_t id = 0;
    const proto::WriteFileBegin begin = p.agent->expect<proto::WriteFileBegin>(id);
    CHECK(begin.path == "/up.bin");
    CHECK(begin.mode == 0600);
    CHECK(begin.create_parents);
    CHECK(begin.write_mode == proto::WriteMode::truncate);
    CHECK(begin.total_size == content.size());

    constexpr std::uint32_t kGrant = 40 * 1024;  // not a multiple of the chunk size
    p.agent->send(id, proto::Credit{proto::StreamId::file_data, kGrant});
    std::int64_t credit = kGrant;
    proto::Bytes received;
    std::size_t frames = 0;
    while (true) {
        std::optional<proto::Frame> f = p.agent->recv();
        REQUIRE(f.has_value());
        REQUIRE(f->request_id == id);
        if (f->type == proto::MessageType::write_file_end) break;
        REQUIRE(f->type == proto::MessageType::file_data);
        const proto::Result<proto::FileData> d = proto::decode_message<proto::FileData>(*f);
        REQUIRE(d.ok());
        CHECK(d->data.size() <= 16 * 1024);
        credit -= static_cast<std::int64_t>(d->data.size());
        REQUIRE(credit >= 0);  // never beyond what was granted
        received.insert(received.end(), d->data.begin(), d->data.end());
        ++frames;
        if (credit == 0) {
            p.agent->send(id, proto::Credit{proto::StreamId::file_data, kGrant});
            credit += kGrant;
        }
    }
    p.agent->send(id, proto::Ok{});
    write.get();
    CHECK(received == content);
    CHECK(frames >= 16);
}

TEST_CASE("vmm: agent client write_file of nothing sends begin and end only") {
    Pair p = make_pair();
    auto write =
        std::async(std::launch::async, [&] { p.client->write_file({"/empty"}, vmm::ByteView{}, 5s); });
    std::uint32_t id = 0;
    CHECK(p.agent->expect<proto::WriteFileBegin>(id).total_size == 0);
    std::uint32_t id2 = 0;
    (void)p.agent->expect<proto::WriteFileEnd>(id2);
    CHECK(id2 == id);
    p.agent->send(id, proto::Ok{});
    write.get();
}

TEST_CASE("vmm: agent client write_file stops at an error reply") {
    Pair p = make_pair();
    const proto::Bytes content(1000, 'q');
    auto write = std::async(std::launch::async, [&] { p.client->write_file({"/ro/x"}, content, 5s); });
    std::uint32_t id = 0;
    (void)p.agent->expect<proto::WriteFileBegin>(id);
    p.agent->send(id, proto::Error{proto::ErrorCode::permission_denied, 30, "read-only file system"});
    const AgentError e = future_error(write);
    CHECK(e.code() == AgentErrorCode::permission_denied);
    CHECK(e.err() == 30);
    CHECK_FALSE(p.agent->recv(100ms).has_value());  // no data was sent without credit
}

TEST_CASE("vmm: agent client a huge declared payload breaks the channel before it is buffered") {
    AgentClientOptions opts;
    opts.max_payload = 4096;
    Pair p = make_pair(opts);
    auto ping = std::async(std::launch::async, [&] { return p.client->ping(20s); });
    std::uint32_t id = 0;
    (void)p.agent->expect<proto::Ping>(id);
    // A valid header declaring a 2 GiB payload; nothing follows.
    proto::Bytes header = {'F', 'K', 'V', 'M', 1, static_cast<std::uint8_t>(proto::MessageType::file_data),
                           0,   0};
    for (int i = 0; i < 4; ++i) header.push_back(static_cast<std::uint8_t>(id >> (8 * i)));
    header.insert(header.end(), {0x00, 0x00, 0x00, 0x80});
    for (int i = 0; i < 4; ++i) header.push_back(0);
    p.agent->send_raw(header);
    CHECK(future_error(ping).code() == AgentErrorCode::broken);
    CHECK(p.client->broken_reason().find("payload_too_large") != std::string::npos);
}

TEST_CASE("vmm: agent client destruction fails every pending call") {
    Pair p = make_pair();
    std::vector<std::future<vmm::PingResult>> pings;
    for (int i = 0; i < 3; ++i)
        pings.push_back(std::async(std::launch::async, [&] { return p.client->ping(30s); }));
    std::uint32_t id = 0;
    for (int i = 0; i < 3; ++i) (void)p.agent->expect<proto::Ping>(id);
    const auto t0 = Clock::now();
    p.client.reset();  // waits for the three calls to leave
    CHECK(Clock::now() - t0 < 10s);
    for (auto& ping : pings) CHECK(future_error(ping).code() == AgentErrorCode::closed);
}

TEST_CASE("vmm: agent client close() fails later calls with closed") {
    Pair p = make_pair();
    p.client->close();
    p.client->close();  // idempotent
    CHECK(p.client->state() == AgentClient::State::closed);
    CHECK(catch_agent_error([&] { (void)p.client->ping(1s); }).code() == AgentErrorCode::closed);
}

TEST_CASE("vmm: agent client stop_token cancels a running exec") {
    Pair p = make_pair();
    std::stop_source stop;
    std::atomic<bool> started{false};
    vmm::ExecCallbacks cb;
    cb.on_started = [&](std::uint32_t) { started = true; };
    auto exec = std::async(std::launch::async, [&] {
        return p.client->exec(command({"/bin/sleep", "100"}), cb, 10s, stop.get_token());
    });
    std::uint32_t id = 0;
    (void)p.agent->expect<proto::ExecStart>(id);
    p.agent->send(id, proto::ExecStarted{99});
    REQUIRE(wait_until([&] { return started.load(); }));
    stop.request_stop();  // e.g. the HTTP client disconnected
    std::uint32_t cid = 0;
    (void)p.agent->expect<proto::Cancel>(cid);
    CHECK(cid == id);
    p.agent->send(id, proto::ExecExit{-1, 9, false, false, false, 10});
    const vmm::ExecResult r = exec.get();
    CHECK(r.cancelled);
    CHECK(r.term_signal == 9);
    CHECK(r.exit_code == -1);
}

TEST_CASE("vmm: agent client stop_token cancels a read_file") {
    Pair p = make_pair();
    std::stop_source stop;
    stop.request_stop();  // already stopped: cancel goes out right after the request
    auto read = std::async(std::launch::async, [&] {
        return p.client->read_file({"/f", 0, 0}, 5s, stop.get_token());
    });
    std::uint32_t id = 0;
    (void)p.agent->expect<proto::ReadFile>(id);
    std::uint32_t cid = 0;
    (void)p.agent->expect<proto::Cancel>(cid);
    CHECK(cid == id);
    p.agent->send(id, proto::Error{proto::ErrorCode::cancelled, 125, "cancelled"});
    CHECK(future_error(read).code() == AgentErrorCode::cancelled);
}

TEST_CASE("vmm: agent client an exception from a callback cancels the exec and propagates") {
    Pair p = make_pair();
    vmm::ExecCallbacks cb;
    cb.on_stdout = [](vmm::ByteView) { throw std::runtime_error("client went away"); };
    auto exec =
        std::async(std::launch::async, [&] { return p.client->exec(command({"/bin/yes"}), cb, 10s); });
    std::uint32_t id = 0;
    (void)p.agent->expect<proto::ExecStart>(id);
    p.agent->send(id, proto::ExecStarted{5});
    p.agent->send(id, proto::ExecOutput{proto::StreamId::exec_stdout, proto::Bytes{'y', '\n'}});
    CHECK_THROWS_WITH_AS((void)exec.get(), "client went away", std::runtime_error);
    std::uint32_t cid = 0;
    (void)p.agent->expect<proto::Cancel>(cid);
    CHECK(cid == id);
    CHECK(p.client->in_flight() == 0);
    CHECK(p.client->state() == AgentClient::State::healthy);
}

TEST_CASE("vmm: agent client exec_buffered keeps output within the caps") {
    AgentClientOptions opts;
    opts.max_buffered_bytes = 8;
    Pair p = make_pair(opts);
    vmm::ExecRequest req;
    req.argv = {"/bin/cat"};
    req.stdout_cap = 5;     // below the client's limit: kept
    req.stderr_cap = 1000;  // above it: clamped to 8
    auto exec = std::async(std::launch::async, [&] { return p.client->exec_buffered(req, 5s); });
    std::uint32_t id = 0;
    const proto::ExecStart start = p.agent->expect<proto::ExecStart>(id);
    CHECK(start.stdout_cap == 5);
    CHECK(start.stderr_cap == 8);
    p.agent->send(id, proto::ExecStarted{3});
    // A misbehaving agent sends more than the caps: the host still keeps only the caps.
    p.agent->send(
        id, proto::ExecOutput{proto::StreamId::exec_stdout, proto::Bytes{'h', 'e', 'l', 'l', 'o', '!', '!'}});
    p.agent->send(id, proto::ExecOutput{proto::StreamId::exec_stderr, proto::Bytes{'o', 'o', 'p', 's'}});
    p.agent->send(id, proto::ExecExit{0, 0, false, false, false, 5});
    const vmm::BufferedExecResult r = exec.get();
    CHECK(r.stdout_data == "hello");
    CHECK(r.stdout_truncated);
    CHECK(r.stderr_data == "oops");
    CHECK_FALSE(r.stderr_truncated);
    CHECK(r.pid == 3);
}

TEST_CASE("vmm: agent client exec output before exec_started breaks the channel") {
    Pair p = make_pair();
    auto exec =
        std::async(std::launch::async, [&] { return p.client->exec(command({"/bin/true"}), {}, 10s); });
    std::uint32_t id = 0;
    (void)p.agent->expect<proto::ExecStart>(id);
    p.agent->send(id, proto::ExecOutput{proto::StreamId::exec_stdout, proto::Bytes{'x'}});
    CHECK(future_error(exec).code() == AgentErrorCode::broken);
    CHECK(p.client->broken_reason().find("before exec_started") != std::string::npos);
}

TEST_CASE("vmm: agent client refuses more requests in flight than configured") {
    AgentClientOptions opts;
    opts.max_in_flight = 1;
    Pair p = make_pair(opts);
    auto ping = std::async(std::launch::async, [&] { return p.client->ping(5s); });
    std::uint32_t id = 0;
    const proto::Ping req = p.agent->expect<proto::Ping>(id);
    CHECK(catch_agent_error([&] { (void)p.client->ping(5s); }).code() == AgentErrorCode::busy);
    p.agent->send(id, proto::Pong{req.nonce, 1});
    CHECK(ping.get().agent_monotonic_ns == 1);
}

TEST_CASE("vmm: agent client rejects a request too large for one frame") {
    Pair p = make_pair();
    vmm::ExecRequest req;
    req.argv = {"/bin/cat"};
    req.stdin_data.assign(proto::kMaxPayload + 1, 'x');
    CHECK(catch_agent_error([&] { (void)p.client->exec(req, {}, 5s); }).code() ==
          AgentErrorCode::invalid_argument);
    CHECK(p.client->state() == AgentClient::State::healthy);
}

TEST_CASE("vmm: agent client withholds credit while the agent does not read its channel") {
    AgentClientOptions opts;
    opts.initial_credit = 16;
    Pair p = make_pair(opts);
    vmm::ExecRequest req = command({"/bin/cat"});
    req.stdin_data.assign(900 * 1024, 's');  // far more than the socket buffers hold
    std::atomic<std::size_t> seen{0};
    vmm::ExecCallbacks cb;
    cb.on_stdout = [&](vmm::ByteView d) { seen += d.size(); };
    auto exec = std::async(std::launch::async, [&] { return p.client->exec(req, cb, 20s); });
    // The agent writes without reading: the ExecStart frame is still queued
    // on the host, so consumed output must not be granted back yet.
    REQUIRE(wait_until([&] { return p.client->in_flight() == 1; }));
    p.agent->send(1, proto::ExecStarted{8});  // a fresh client numbers requests from 1
    p.agent->send(1, proto::ExecOutput{proto::StreamId::exec_stdout, proto::Bytes(16, 'o')});
    REQUIRE(wait_until([&] { return seen == 16; }));
    std::this_thread::sleep_for(50ms);
    p.agent->send(1, proto::ExecOutput{proto::StreamId::exec_stdout, proto::Bytes{'!'}});
    CHECK(future_error(exec).code() == AgentErrorCode::broken);
    CHECK(p.client->broken_reason().find("credit") != std::string::npos);
}

TEST_CASE(
    "vmm: agent client: a guest that opens proxy streams and never reads cannot grow the host's queue") {
    AgentClientOptions options;
    options.max_proxy_backlog = 64 * 1024;
    auto p = make_pair(options);
    p.agent->send(0, proto::Ready{proto::kProtocolVersion, "fake", proto::kCapProxy});
    REQUIRE(p.client->wait_ready().agent_version == "fake");
    // Without a handler each open gets a 403 and a close (~250 bytes): 20000
    // of them would queue 5 MB for an agent that reads nothing.
    proto::Bytes batch;
    for (std::uint32_t i = 0; i < 20000; ++i) {
        REQUIRE(proto::append_message(batch, 0x80000000U | i, proto::ProxyOpen{65536}) ==
                proto::ProtoError::none);
    }
    p.agent->send_raw(batch);
    // Let the reader handle them all (a ping's frame goes behind them).
    std::this_thread::sleep_for(300ms);
    CHECK(p.client->queued_bytes() <= 2 * (64 * 1024 + 512));
    CHECK(p.client->state() == AgentClient::State::healthy);
}
