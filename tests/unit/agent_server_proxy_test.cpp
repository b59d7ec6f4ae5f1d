// The agent's egress proxy streams (guest/agent/proxy_streams.hpp) through
// the agent harness: a TCP client on the proxy port becomes a proxy stream
// on the channel; bytes flow only within credit, both ways; half-close and
// abort; the host breaking the protocol ends that stream only; execs get
// the proxy variables.

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <string>

#include "guest/agent/proxy_streams.hpp"
#include "guest/agent/test_harness.hpp"
#include "tests/support/loopback.hpp"

using namespace forkvm;
using agent::testing::AgentHarness;

namespace {

UniqueFd connect_to(std::uint16_t port) {
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < 200; ++i) {  // the agent starts listening in its own time
        if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) return fd;
        fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
        ::usleep(10000);
    }
    FAIL("cannot connect to the agent's proxy port " << port);
    return {};
}

// What the client can read within `timeout_ms` ("" on EOF or nothing).
std::string read_some(int fd, int timeout_ms = 2000) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, timeout_ms) <= 0) return "<nothing>";
    char buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    return n <= 0 ? "" : std::string(buf, static_cast<std::size_t>(n));
}

struct Opened {
    std::uint32_t id = 0;
    proto::ProxyOpen open;
};

Opened expect_open(AgentHarness& h) {
    auto f = h.recv();
    REQUIRE(f.has_value());
    auto m = proto::decode_message<proto::ProxyOpen>(*f);
    REQUIRE(m);
    return {f->request_id, *m};
}

template <class M>
M expect(AgentHarness& h, std::uint32_t id) {
    auto f = h.recv();
    REQUIRE(f.has_value());
    CHECK(f->request_id == id);
    INFO("got " << proto::message_type_name(f->type));
    auto m = proto::decode_message<M>(*f);
    REQUIRE(m);
    return *m;
}

std::string text(const proto::Bytes& b) { return {b.begin(), b.end()}; }
proto::Bytes bytes(const std::string& s) { return {s.begin(), s.end()}; }

agent::Options proxy_options(std::uint16_t port, std::uint32_t window = 64 * 1024) {
    agent::Options o = agent::testing::test_options();
    o.proxy_port = port;
    o.proxy_window = window;
    return o;
}

}  // namespace

TEST_CASE("agent proxy: a client's bytes go to the host within credit, the host's come back") {
    const std::uint16_t port = forkvm::test::unused_loopback_port();
    AgentHarness h(proxy_options(port, 64));
    auto ready = h.ready();
    REQUIRE(ready.has_value());
    CHECK((ready->capabilities & proto::kCapProxy) != 0);

    UniqueFd client = connect_to(port);
    const Opened o = expect_open(h);
    CHECK((o.id & agent::kProxyStreamIdBit) != 0);
    CHECK(o.open.initial_credit == 64);

    // No credit from the host yet: nothing is sent.
    REQUIRE(::write(client.get(), "hello", 5) == 5);
    CHECK_FALSE(h.recv(200).has_value());
    h.send(o.id, proto::ProxyCredit{3});
    CHECK(text(expect<proto::ProxyData>(h, o.id).data) == "hel");
    h.send(o.id, proto::ProxyCredit{10});
    CHECK(text(expect<proto::ProxyData>(h, o.id).data) == "lo");

    // Host bytes reach the client; the agent grants them back once written.
    h.send(o.id, proto::ProxyData{bytes("world")});
    CHECK(read_some(client.get()) == "world");
    CHECK(expect<proto::ProxyCredit>(h, o.id).bytes == 5);

    // The client's half-close, then the host's last bytes and close: the
    // client reads them and then EOF.
    ::shutdown(client.get(), SHUT_WR);
    const auto half = expect<proto::ProxyClose>(h, o.id);
    CHECK_FALSE(half.abort);
    h.send(o.id, proto::ProxyData{bytes("bye")});
    h.send(o.id, proto::ProxyClose{"relay done", false});
    CHECK(read_some(client.get()) == "bye");
    CHECK(read_some(client.get()) == "");
}

TEST_CASE("agent proxy: a host that sends past its credit loses that stream, not the agent") {
    const std::uint16_t port = forkvm::test::unused_loopback_port();
    AgentHarness h(proxy_options(port, 16));
    REQUIRE(h.ready().has_value());
    UniqueFd client = connect_to(port);
    const Opened o = expect_open(h);
    h.send(o.id, proto::ProxyData{bytes(std::string(17, 'x'))});
    const auto closed = expect<proto::ProxyClose>(h, o.id);
    CHECK(closed.abort);
    CHECK(closed.reason.find("beyond its credit") != std::string::npos);
    CHECK(read_some(client.get()) == "");
    // The agent still serves: a ping, and a new stream.
    auto pong = h.request(7, proto::Ping{42});
    REQUIRE(pong.has_value());
    CHECK(std::get<proto::Pong>(*pong).nonce == 42);
    UniqueFd second = connect_to(port);
    CHECK(expect_open(h).id != o.id);
}

TEST_CASE("agent proxy: a client that goes away aborts its stream") {
    const std::uint16_t port = forkvm::test::unused_loopback_port();
    AgentHarness h(proxy_options(port));
    REQUIRE(h.ready().has_value());
    UniqueFd client = connect_to(port);
    const Opened o = expect_open(h);
    h.send(o.id, proto::ProxyCredit{1000});
    // A reset (SO_LINGER 0): the agent's read fails or sees EOF.
    linger l{1, 0};
    ::setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
    client.reset();
    const auto closed = expect<proto::ProxyClose>(h, o.id);
    CHECK_FALSE(closed.reason.empty());
    // Late host data for it is dropped quietly; the host's close ends it.
    h.send(o.id, proto::ProxyData{bytes("late")});
    h.send(o.id, proto::ProxyClose{"relay done", false});
    auto pong = h.request(8, proto::Ping{1});
    REQUIRE(pong.has_value());
    CHECK(std::holds_alternative<proto::Pong>(*pong));
}

TEST_CASE("agent proxy: execs get the proxy variables unless they set their own") {
    const std::uint16_t port = forkvm::test::unused_loopback_port();
    AgentHarness h(proxy_options(port));
    REQUIRE(h.ready().has_value());
    auto r = agent::testing::run_exec(
        h, 1, agent::testing::exec_req({"sh", "-c", "echo $HTTP_PROXY $https_proxy $NO_PROXY"}));
    CHECK(r.out == "http://127.0.0.1:" + std::to_string(port) + " http://127.0.0.1:" + std::to_string(port) +
                       " localhost,127.0.0.1,::1\n");
    auto req = agent::testing::exec_req({"sh", "-c", "echo $HTTP_PROXY"});
    req.env = {"HTTP_PROXY="};
    CHECK(agent::testing::run_exec(h, 2, req).out == "\n");

    // Without a proxy (the harness default), nothing is added.
    AgentHarness plain;
    auto ready = plain.ready();
    REQUIRE(ready.has_value());
    CHECK((ready->capabilities & proto::kCapProxy) == 0);
    CHECK(agent::testing::run_exec(plain, 1, agent::testing::exec_req({"sh", "-c", "echo x${HTTP_PROXY}x"}))
              .out == "xx\n");
}

TEST_CASE("agent proxy: past max_proxy_streams a client waits until a stream ends") {
    const std::uint16_t port = forkvm::test::unused_loopback_port();
    agent::Options opt = proxy_options(port);
    opt.max_proxy_streams = 1;
    AgentHarness h(opt);
    REQUIRE(h.ready().has_value());
    UniqueFd first = connect_to(port);
    const Opened o = expect_open(h);
    UniqueFd second = connect_to(port);  // in the listen backlog
    CHECK_FALSE(h.recv(300).has_value());
    h.send(o.id, proto::ProxyClose{"done", true});
    CHECK(expect<proto::ProxyClose>(h, o.id).abort);
    CHECK(expect_open(h).id != o.id);
}
