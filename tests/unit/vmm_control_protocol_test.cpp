// The VM process control channel: JSON messages over SOCK_SEQPACKET, with
// file descriptors passed alongside (a fork's sockets).

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <doctest/doctest.h>
#include <string>
#include <vector>

#include "vmm/control_protocol.hpp"

namespace {

using forkvm::UniqueFd;
namespace control = forkvm::vmm::control;

struct Pair {
    UniqueFd a, b;
    Pair() {
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
        a.reset(sv[0]);
        b.reset(sv[1]);
    }
};

std::array<UniqueFd, 2> make_pipe() {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    return {UniqueFd(p[0]), UniqueFd(p[1])};
}

}  // namespace

TEST_CASE("vmm: control messages carry passed fds that work on the other side") {
    Pair s;
    auto [r, w] = make_pipe();
    const std::array<int, 2> fds{r.get(), w.get()};
    REQUIRE(control::send_message(s.a.get(), {{"op", "fork"}, {"id", 7}}, fds));
    std::vector<UniqueFd> got;
    auto msg = control::recv_message(s.b.get(), &got);
    REQUIRE(msg);
    CHECK((*msg)["op"] == "fork");
    REQUIRE(got.size() == 2);
    CHECK(got[0].get() != r.get());
    // The received write end feeds the original read end.
    REQUIRE(::write(got[1].get(), "x", 1) == 1);
    char c = 0;
    REQUIRE(::read(r.get(), &c, 1) == 1);
    CHECK(c == 'x');
    // Received fds are close-on-exec (they must not leak into spawned processes).
    CHECK((::fcntl(got[0].get(), F_GETFD) & FD_CLOEXEC) != 0);
}

TEST_CASE("vmm: fds that come with an unwanted or invalid control message are closed") {
    Pair s;
    auto [r, w] = make_pipe();
    const std::array<int, 1> fds{w.get()};
    REQUIRE(control::send_message(s.a.get(), {{"op", "status"}}, fds));
    auto msg = control::recv_message(s.b.get());  // caller takes no fds
    REQUIRE(msg);
    w.reset();
    // The only write end left was the received copy: closed, so EOF.
    char c = 0;
    CHECK(::read(r.get(), &c, 1) == 0);
}

TEST_CASE("vmm: a control message that is not a JSON object is flagged invalid") {
    Pair s;
    REQUIRE(::send(s.a.get(), "[1,2", 4, 0) == 4);
    std::vector<UniqueFd> got;
    auto msg = control::recv_message(s.b.get(), &got);
    REQUIRE(msg);
    CHECK(msg->contains("invalid"));
    CHECK(got.empty());
    CHECK_FALSE(control::send_message(s.a.get(), {{"x", std::string(control::kMaxControlMessage, 'a')}}));
}
