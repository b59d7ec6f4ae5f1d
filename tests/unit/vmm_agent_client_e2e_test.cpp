// AgentClient against the real agent: forkvm::agent::serve() runs in a forked
// child on one end of a socketpair (no VM), the client on the other.

#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <doctest/doctest.h>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <stop_token>
#include <string>
#include <thread>

#include "guest/agent/options.hpp"
#include "guest/agent/server.hpp"
#include "http_proxy/egress_relay.hpp"
#include "pool/egress_bridge.hpp"
#include "tests/support/loopback.hpp"
#include "vmm/agent_client.hpp"

using namespace std::chrono_literals;
namespace vmm = forkvm::vmm;
namespace proto = forkvm::proto;

namespace {

// The agent in a child process; the client owns the host end.
class RealAgent {
public:
    explicit RealAgent(std::uint16_t proxy_port = 0, vmm::AgentClientOptions client_options = {}) {
        forkvm::agent::Options options;
        if (const passwd* pw = ::getpwuid(::geteuid())) options.default_user = pw->pw_name;
        options.proxy_port = proxy_port;  // 0 (none) unless a test asks: tests run in parallel
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            ::close(sv[0]);
            ::_exit(forkvm::agent::serve(sv[1], options));
        }
        ::close(sv[1]);
        client = std::make_unique<vmm::AgentClient>(forkvm::UniqueFd(sv[0]), client_options);
    }
    RealAgent(const RealAgent&) = delete;
    RealAgent& operator=(const RealAgent&) = delete;
    ~RealAgent() {
        client.reset();  // EOF: the agent returns from serve()
        const auto until = std::chrono::steady_clock::now() + 3s;
        int status = 0;
        while (::waitpid(pid_, &status, WNOHANG) == 0) {
            if (std::chrono::steady_clock::now() > until) {
                ::kill(pid_, SIGKILL);
                ::waitpid(pid_, &status, 0);
                break;
            }
            std::this_thread::sleep_for(2ms);
        }
    }

    std::unique_ptr<vmm::AgentClient> client;

private:
    pid_t pid_ = -1;
};

vmm::ExecRequest shell(std::string script) {
    vmm::ExecRequest req;
    req.argv = {"/bin/sh", "-c", std::move(script)};
    return req;
}

}  // namespace

TEST_CASE("vmm: agent client end to end with the real agent: ping, exec, files") {
    RealAgent agent;
    vmm::AgentClient& c = *agent.client;
    const vmm::AgentInfo info = c.wait_ready(10s);
    CHECK(info.protocol_version == proto::kProtocolVersion);
    CHECK_FALSE(info.agent_version.empty());

    const vmm::PingResult pong = c.ping(5s);
    CHECK(pong.rtt > 0ns);
    CHECK(pong.agent_monotonic_ns > 0);

    const vmm::BufferedExecResult hi = c.exec_buffered(shell("echo hi; echo oops >&2; exit 3"), 10s);
    CHECK(hi.stdout_data == "hi\n");
    CHECK(hi.stderr_data == "oops\n");
    CHECK(hi.exit_code == 3);
    CHECK(hi.pid > 0);

    vmm::ExecRequest cat = shell("cat");
    cat.stdin_data = "fed through stdin";
    CHECK(c.exec_buffered(cat, 10s).stdout_data == "fed through stdin");

    char dir_template[] = "/tmp/forkvm-h6-XXXXXX";
    REQUIRE(::mkdtemp(dir_template) != nullptr);
    const std::string dir = dir_template;
    proto::Bytes content(256 * 1024);
    for (std::size_t i = 0; i < content.size(); ++i)
        content[i] = static_cast<std::uint8_t>((i * 7 + i / 256) & 0xFFU);

    c.write_file({dir + "/sub/data.bin", 0600, true, false}, content, 20s);
    CHECK(c.exists(dir + "/sub/data.bin", 5s));
    const proto::StatResult st = c.stat(dir + "/sub/data.bin", true, 5s);
    CHECK(st.type == proto::FileType::file);
    CHECK(st.size == content.size());
    CHECK(st.mode == 0600);
    const vmm::ReadFileData back = c.read_file({dir + "/sub/data.bin", 0, 0}, 20s);
    CHECK(back.eof);
    CHECK(back.data == content);
    const vmm::ReadFileData part = c.read_file({dir + "/sub/data.bin", 1000, 10}, 5s);
    CHECK(part.data == proto::Bytes(content.begin() + 1000, content.begin() + 1010));

    c.mkdir(dir + "/a", false, 0755, 5s);
    c.rename(dir + "/a", dir + "/b", 5s);
    const proto::DirEntries entries = c.list_dir(dir, 100, 5s);
    CHECK(entries.entries.size() == 2);
    const vmm::AgentError missing = [&] {
        try {
            (void)c.stat(dir + "/nope", true, 5s);
        } catch (const vmm::AgentError& e) {
            return e;
        }
        return vmm::AgentError(vmm::AgentErrorCode::internal, "no error");
    }();
    CHECK(missing.code() == vmm::AgentErrorCode::not_found);
    CHECK(missing.err() == ENOENT);

    c.remove(dir, true, 10s);
    CHECK_FALSE(c.exists(dir, 5s));
    std::error_code ec;
    CHECK_FALSE(std::filesystem::exists(dir, ec));
    CHECK(c.state() == vmm::AgentClient::State::healthy);
}

TEST_CASE("vmm: agent client end to end: a stop request kills a running command") {
    RealAgent agent;
    vmm::AgentClient& c = *agent.client;
    (void)c.wait_ready(10s);
    std::stop_source stop;
    vmm::ExecCallbacks cb;
    cb.on_started = [&](std::uint32_t) { stop.request_stop(); };
    const auto t0 = std::chrono::steady_clock::now();
    const vmm::ExecResult r = c.exec(shell("sleep 30"), cb, 20s, stop.get_token());
    CHECK(r.cancelled);
    CHECK(r.term_signal != 0);
    CHECK(std::chrono::steady_clock::now() - t0 < 15s);
    CHECK(c.ping(5s).agent_monotonic_ns > 0);
}

namespace {

using forkvm::test::proxy_client;

// Answers every stream with "echo:" + what its client sent in its first
// data frame, then closes it.
class EchoHandler : public vmm::ProxyStreamHandler {
public:
    vmm::AgentClient* client = nullptr;
    void on_proxy_open(std::uint32_t stream, std::uint32_t initial_credit) override {
        {
            const std::lock_guard lock(mu_);
            opened_ = initial_credit;
            stream_ = stream;
        }
        client->send_proxy(stream, proto::ProxyCredit{1024});
    }
    void on_proxy_data(std::uint32_t stream, proto::Bytes data) override {
        const std::string reply = "echo:" + std::string(data.begin(), data.end());
        client->send_proxy(stream, proto::ProxyData{proto::Bytes(reply.begin(), reply.end())});
        client->send_proxy(stream, proto::ProxyClose{"done", false});
    }
    void on_proxy_credit(std::uint32_t, std::uint32_t) override {}
    // Closes of its own stream only: the agent's close of a stream refused
    // before this handler was set may come late.
    void on_proxy_close(std::uint32_t stream, const proto::ProxyClose&) override {
        const std::lock_guard lock(mu_);
        if (stream == stream_) ++closes_;
    }
    std::uint32_t opened() {
        const std::lock_guard lock(mu_);
        return opened_;
    }
    int closes() {
        const std::lock_guard lock(mu_);
        return closes_;
    }

private:
    std::mutex mu_;
    std::uint32_t opened_ = 0;
    std::uint32_t stream_ = 0;
    int closes_ = 0;
};

}  // namespace

TEST_CASE("vmm: agent client end to end: proxy streams are refused without a handler, served with one") {
    const std::uint16_t port = forkvm::test::unused_loopback_port();
    RealAgent agent(port);
    REQUIRE((agent.client->wait_ready().capabilities & proto::kCapProxy) != 0);

    const std::string refused = proxy_client(port, "CONNECT example.com:443 HTTP/1.1\r\n\r\n");
    CHECK(refused.starts_with("HTTP/1.1 403 Forbidden\r\n"));
    CHECK(refused.ends_with("forkvm egress: this sandbox has no network access (no egress policy)\n"));

    auto handler = std::make_shared<EchoHandler>();
    handler->client = agent.client.get();
    agent.client->set_proxy_handler(handler);
    CHECK(proxy_client(port, "ping") == "echo:ping");
    CHECK(handler->opened() == 64 * 1024);
    // The agent answered the handler's close with its own.
    for (int i = 0; i < 200 && handler->closes() == 0; ++i) std::this_thread::sleep_for(10ms);
    CHECK(handler->closes() == 1);
    CHECK(agent.client->ping().rtt.count() > 0);
}

namespace {

struct IoThread {
    boost::asio::io_context io;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
    std::thread thread{[this] { io.run(); }};
    ~IoThread() {
        work.reset();
        io.stop();
        thread.join();
    }
};

forkvm::http_proxy::EgressContext egress_to(std::uint16_t port) {
    forkvm::http_proxy::EgressContext c;
    c.policy = std::make_shared<forkvm::http_proxy::Policy>(forkvm::http_proxy::Policy::parse(
        nlohmann::json::parse(R"({"allow": [{"domain": "up.test", "ports": [)" + std::to_string(port) +
                              R"(]}], "allow_private": ["127.0.0.1"]})")));
    c.hosts = std::make_shared<forkvm::http_proxy::HostsMap>(
        forkvm::http_proxy::HostsMap::parse({"up.test=127.0.0.1"}));
    c.budget = std::make_shared<forkvm::http_proxy::EgressBudget>(c.policy->limits());
    return c;
}

}  // namespace

TEST_CASE("pool: the egress bridge carries a guest client's CONNECT tunnel and refusals end to end") {
    const std::uint16_t port = forkvm::test::unused_loopback_port();
    RealAgent agent(port);
    REQUIRE((agent.client->wait_ready().capabilities & proto::kCapProxy) != 0);
    // The upstream counts what the tunnel brought and answers with it.
    forkvm::test::OneConnectionServer upstream(
        forkvm::test::OneConnectionServer::answering([](const std::string& got) {
            return "got " + std::to_string(got.size()) + " bytes, last " + got.substr(got.size() - 3);
        }));
    IoThread io;
    auto bridge = std::make_shared<forkvm::pool::EgressBridge>(*agent.client, io.io.get_executor(),
                                                               egress_to(upstream.port()));
    agent.client->set_proxy_handler(bridge);

    // 1 MiB through the tunnel: many times both credit windows.
    std::string payload(1 << 20, 'x');
    payload.replace(payload.size() - 3, 3, "end");
    const std::string head = "CONNECT up.test:" + std::to_string(upstream.port()) + " HTTP/1.1\r\n\r\n";
    CHECK(proxy_client(port, head + payload, true) ==
          "HTTP/1.1 200 Connection established\r\n\r\ngot 1048576 bytes, last end");

    const std::string refused = proxy_client(port, "GET http://evil.test/ HTTP/1.1\r\n\r\n", true);
    CHECK(refused.starts_with("HTTP/1.1 403 Forbidden\r\n"));
    CHECK(refused.find("evil.test") != std::string::npos);

    for (int i = 0; i < 300 && bridge->open_streams() != 0; ++i) std::this_thread::sleep_for(10ms);
    CHECK(bridge->open_streams() == 0);
    bridge->close_all("test over");
    CHECK(agent.client->ping().rtt.count() > 0);
}

TEST_CASE("pool: a download larger than the channel's proxy backlog waits for room instead of being cut") {
    // 32 KiB of backlog for 4 MiB coming down one tunnel: the bridge must
    // pause on a full queue and go on when it drains, many times over.
    vmm::AgentClientOptions options;
    options.max_proxy_backlog = 32 * 1024;
    const std::uint16_t port = forkvm::test::unused_loopback_port();
    RealAgent agent(port, options);
    REQUIRE((agent.client->wait_ready().capabilities & proto::kCapProxy) != 0);
    std::string payload(4 << 20, '\0');
    for (std::size_t i = 0; i < payload.size(); ++i)
        payload[i] = static_cast<char>((i * 7 + i / 4093) & 0xff);
    forkvm::test::OneConnectionServer upstream([&](int fd) {
        (void)forkvm::test::read_until_eof(fd);
        forkvm::test::write_all(fd, payload);
    });
    IoThread io;
    auto bridge = std::make_shared<forkvm::pool::EgressBridge>(*agent.client, io.io.get_executor(),
                                                               egress_to(upstream.port()));
    agent.client->set_proxy_handler(bridge);
    const std::string head = "CONNECT up.test:" + std::to_string(upstream.port()) + " HTTP/1.1\r\n\r\n";
    const std::string got = proxy_client(port, head, true);
    const std::string established = "HTTP/1.1 200 Connection established\r\n\r\n";
    REQUIRE(got.size() == established.size() + payload.size());
    CHECK(got.substr(established.size()) == payload);
    bridge->close_all("test over");
}
