// EgressConnection (http_proxy/egress_relay.hpp) with a fake guest stream
// and real TCP upstreams on loopback: the tunnel, the rewritten plain HTTP
// request, refusals, and the connection, byte and time limits.

#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <condition_variable>
#include <doctest/doctest.h>
#include <functional>
#include <future>
#include <mutex>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "http_proxy/egress_relay.hpp"
#include "tests/support/loopback.hpp"

using namespace forkvm::http_proxy;
using namespace std::chrono_literals;

namespace {

// The guest end: keeps what it is sent, takes everything at once.
class FakeGuest : public GuestStream {
public:
    void send(std::string bytes, std::function<void()> sent) override {
        {
            std::lock_guard lock(mu_);
            received_ += bytes;
        }
        cv_.notify_all();
        sent();
    }
    void consumed(std::size_t bytes) override {
        std::lock_guard lock(mu_);
        consumed_ += bytes;
    }
    void close(const std::string& reason) override {
        {
            std::lock_guard lock(mu_);
            closed_ = reason;
        }
        cv_.notify_all();
    }
    // Waits until the relay closed the connection; returns the reason.
    std::string wait_closed() {
        std::unique_lock lock(mu_);
        REQUIRE(cv_.wait_for(lock, 10s, [&] { return !closed_.empty(); }));
        return closed_;
    }
    bool wait_received(const std::string& what) {
        std::unique_lock lock(mu_);
        return cv_.wait_for(lock, 10s, [&] { return received_.find(what) != std::string::npos; });
    }
    std::string received() {
        std::lock_guard lock(mu_);
        return received_;
    }
    std::size_t consumed() {
        std::lock_guard lock(mu_);
        return consumed_;
    }

private:
    std::mutex mu_;
    std::condition_variable cv_;
    std::string received_;
    std::string closed_;
    std::size_t consumed_ = 0;
};

// One loopback listener whose first connection is served by `serve(fd)`.
using forkvm::test::read_until_eof;
using forkvm::test::write_all;
using Upstream = forkvm::test::OneConnectionServer;

// An io_context running on its own thread for the relay.
struct Relay {
    boost::asio::io_context io;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work{io.get_executor()};
    std::thread thread{[this] { io.run(); }};
    ~Relay() {
        work.reset();
        io.stop();
        thread.join();
    }
};

EgressContext context_for(std::uint16_t port, const std::string& limits = "{}") {
    EgressContext c;
    const auto doc =
        nlohmann::json::parse(R"({"allow": [{"domain": "up.test", "ports": [)" + std::to_string(port) +
                              R"(]}], "allow_private": ["127.0.0.1"], "limits": )" + limits + "}");
    c.policy = std::make_shared<Policy>(Policy::parse(doc));
    c.hosts = std::make_shared<HostsMap>(HostsMap::parse({"up.test=127.0.0.1"}));
    c.budget = std::make_shared<EgressBudget>(c.policy->limits());
    return c;
}

}  // namespace

TEST_CASE("egress relay: a CONNECT tunnel relays both ways, half-close included") {
    Upstream echo([](int fd) { write_all(fd, read_until_eof(fd)); });
    Relay relay;
    auto guest = std::make_shared<FakeGuest>();
    std::string decided;
    EgressContext ctx = context_for(echo.port());
    ctx.events.decided = [&](const ConnectPlan& p) {
        decided = std::to_string(p.status) + " " + p.request_line;
    };
    auto conn = EgressConnection::create(relay.io.get_executor(), ctx, guest);
    conn->start();
    const std::string head = "CONNECT up.test:" + std::to_string(echo.port()) + " HTTP/1.1\r\n\r\n";
    conn->client_data(head + "hello");
    conn->client_data(" world");
    conn->client_closed();
    CHECK(guest->wait_closed() == "the upstream closed the connection");
    CHECK(guest->received() == "HTTP/1.1 200 Connection established\r\n\r\nhello world");
    CHECK(guest->consumed() == head.size() + 11);
    CHECK(decided == "200 CONNECT up.test:" + std::to_string(echo.port()));
    CHECK(ctx.budget->open_connections() == 0);
}

TEST_CASE("egress relay: a client that half-closes before the upstream connected is passed on") {
    Upstream echo(
        [](int fd) { write_all(fd, "seen eof after " + std::to_string(read_until_eof(fd).size())); });
    Relay relay;
    auto guest = std::make_shared<FakeGuest>();
    auto conn = EgressConnection::create(relay.io.get_executor(), context_for(echo.port()), guest);
    conn->start();
    conn->client_data("CONNECT up.test:" + std::to_string(echo.port()) + " HTTP/1.1\r\n\r\n");
    conn->client_closed();  // most likely still connecting: nothing queued for the upstream
    CHECK(guest->wait_closed() == "the upstream closed the connection");
    CHECK(guest->received() == "HTTP/1.1 200 Connection established\r\n\r\nseen eof after 0");
}

TEST_CASE("egress relay: plain HTTP goes upstream rewritten, with its body and nothing after it") {
    std::promise<std::string> captured;
    Upstream server([&](int fd) {
        // The head, then the 3 body bytes; then answer and close.
        std::string got;
        char buf[4096];
        while (got.find("\r\n\r\n") == std::string::npos || got.size() < got.find("\r\n\r\n") + 4 + 3) {
            const ssize_t n = ::read(fd, buf, sizeof buf);
            if (n <= 0) break;
            got.append(buf, static_cast<std::size_t>(n));
        }
        std::this_thread::sleep_for(100ms);  // room for anything the relay should not send
        const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n > 0) got.append(buf, static_cast<std::size_t>(n));
        captured.set_value(got);
        write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    });
    Relay relay;
    auto guest = std::make_shared<FakeGuest>();
    auto conn = EgressConnection::create(relay.io.get_executor(), context_for(server.port()), guest);
    conn->start();
    const std::string port = std::to_string(server.port());
    conn->client_data("POST http://up.test:" + port +
                      "/x HTTP/1.1\r\nHost: evil.test\r\nContent-Length: 3\r\n\r\nab");
    conn->client_data("cGET http://up.test:" + port + "/admin HTTP/1.1\r\n\r\n");
    CHECK(guest->wait_closed() == "the upstream closed the connection");
    CHECK(captured.get_future().get() == "POST /x HTTP/1.1\r\nHost: up.test:" + port +
                                             "\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc");
    CHECK(guest->received() == "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
}

TEST_CASE("egress relay: a refused destination gets the proxy's response and nothing connects") {
    Relay relay;
    auto guest = std::make_shared<FakeGuest>();
    int decided_status = 0;
    EgressContext ctx = context_for(9);
    ctx.events.decided = [&](const ConnectPlan& p) { decided_status = p.status; };
    auto conn = EgressConnection::create(relay.io.get_executor(), ctx, guest);
    conn->start();
    conn->client_data("CONNECT evil.test:443 HTTP/1.1\r\n\r\n");
    CHECK(guest->wait_closed().find("evil.test") != std::string::npos);
    CHECK(guest->received().starts_with("HTTP/1.1 403 Forbidden\r\n"));
    CHECK(decided_status == 403);
}

TEST_CASE("egress relay: connections past max_connections get 429") {
    Relay relay;
    EgressContext ctx = context_for(9, R"({"max_connections": 1})");
    auto first_guest = std::make_shared<FakeGuest>();
    auto first = EgressConnection::create(relay.io.get_executor(), ctx, first_guest);
    first->start();
    auto second_guest = std::make_shared<FakeGuest>();
    auto second = EgressConnection::create(relay.io.get_executor(), ctx, second_guest);
    second->start();
    CHECK(second_guest->wait_closed().find("1 proxied connections") != std::string::npos);
    CHECK(second_guest->received().starts_with("HTTP/1.1 429 Too Many Requests\r\n"));
    first->abort("test over");
    CHECK(first_guest->wait_closed() == "test over");
    CHECK(ctx.budget->open_connections() == 0);
}

TEST_CASE("egress relay: the byte budget, the idle time and an unreachable upstream end a connection") {
    SUBCASE("max_bytes") {
        Upstream sink([](int fd) { (void)read_until_eof(fd); });
        Relay relay;
        auto guest = std::make_shared<FakeGuest>();
        auto conn = EgressConnection::create(relay.io.get_executor(),
                                             context_for(sink.port(), R"({"max_bytes": 100})"), guest);
        conn->start();
        conn->client_data("CONNECT up.test:" + std::to_string(sink.port()) + " HTTP/1.1\r\n\r\n");
        REQUIRE(guest->wait_received("200 Connection established"));
        conn->client_data(std::string(200, 'x'));
        CHECK(guest->wait_closed().find("(limits.max_bytes)") != std::string::npos);
    }
    SUBCASE("idle upstream") {
        Upstream silent([](int fd) { (void)read_until_eof(fd); });
        Relay relay;
        auto guest = std::make_shared<FakeGuest>();
        auto conn = EgressConnection::create(
            relay.io.get_executor(),
            context_for(silent.port(), R"({"idle_timeout_ms": 100, "total_timeout_ms": 5000})"), guest);
        conn->start();
        conn->client_data("CONNECT up.test:" + std::to_string(silent.port()) + " HTTP/1.1\r\n\r\n");
        CHECK(guest->wait_closed() == "the connection was idle for 100 ms");
    }
    SUBCASE("a head that never completes") {
        Relay relay;
        auto guest = std::make_shared<FakeGuest>();
        auto conn = EgressConnection::create(
            relay.io.get_executor(), context_for(9, R"({"idle_timeout_ms": 100, "total_timeout_ms": 5000})"),
            guest);
        conn->start();
        conn->client_data("CONNECT up.te");
        CHECK(guest->wait_closed() == "the connection was idle for 100 ms");
        CHECK(guest->received().starts_with("HTTP/1.1 408 Request Timeout\r\n"));
    }
    SUBCASE("nothing listens") {
        std::uint16_t port = 0;
        {
            Upstream gone([](int) {});
            port = gone.port();
            // Connect once so its thread ends; then the port is closed.
            const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
            sockaddr_in a{};
            a.sin_family = AF_INET;
            a.sin_port = htons(port);
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            (void)::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
            ::close(fd);
        }
        Relay relay;
        auto guest = std::make_shared<FakeGuest>();
        auto conn = EgressConnection::create(relay.io.get_executor(), context_for(port), guest);
        conn->start();
        conn->client_data("CONNECT up.test:" + std::to_string(port) + " HTTP/1.1\r\n\r\n");
        CHECK(guest->wait_closed().find("cannot connect to 127.0.0.1 port " + std::to_string(port)) !=
              std::string::npos);
        CHECK(guest->received().starts_with("HTTP/1.1 502 Bad Gateway\r\n"));
    }
}
