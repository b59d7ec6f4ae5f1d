// The agent's server loop, driven over a socketpair: start-up, ping, exec
// (output, exit status, env, cwd, stdin, caps, credit, timeout, cancel),
// robustness against malformed frames.

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <doctest/doctest.h>
#include <string>

#include "guest/agent/test_harness.hpp"

namespace proto = forkvm::proto;
using forkvm::agent::testing::AgentHarness;
using forkvm::agent::testing::exec_req;
using forkvm::agent::testing::group_gone;
using forkvm::agent::testing::run_exec;
using forkvm::agent::testing::test_options;

namespace {

std::string all_bytes_from(int first) {
    std::string s;
    for (int c = first; c < 256; ++c) s.push_back(static_cast<char>(c));
    return s;
}

}  // namespace

TEST_CASE("agent_server: sends Ready on start and answers a ping") {
    AgentHarness h;
    REQUIRE(h.started());
    auto ready = h.ready();
    REQUIRE(ready);
    CHECK(ready->protocol_version == proto::kProtocolVersion);
    CHECK(!ready->agent_version.empty());
    CHECK(ready->capabilities == (proto::kCapExec | proto::kCapFiles | proto::kCapCredit));
    auto reply = h.request(7, proto::Ping{0xdeadbeefcafeULL});
    REQUIRE(reply);
    auto* pong = std::get_if<proto::Pong>(&*reply);
    REQUIRE(pong);
    CHECK(pong->nonce == 0xdeadbeefcafeULL);
    CHECK(pong->monotonic_ns > 0);
    CHECK(h.stop() == 0);  // EOF on the channel: clean shutdown
}

TEST_CASE("agent_server: exec reports stdout, stderr and the exit code") {
    AgentHarness h;
    REQUIRE(h.ready());
    auto r = run_exec(h, 1, exec_req({"sh", "-c", "echo out; echo err >&2; exit 7"}));
    REQUIRE(!r.error);
    REQUIRE(r.exit);
    CHECK(r.pid > 0);
    CHECK(r.out == "out\n");
    CHECK(r.err == "err\n");
    CHECK(r.exit->exit_code == 7);
    CHECK(r.exit->term_signal == 0);
    CHECK(!r.exit->timed_out);
    CHECK(!r.exit->stdout_truncated);
    CHECK(r.exit->duration_us > 0);
}

TEST_CASE("agent_server: a signal-killed command reports term_signal") {
    AgentHarness h;
    REQUIRE(h.ready());
    auto r = run_exec(h, 1, exec_req({"sh", "-c", "kill -TERM $$"}));
    REQUIRE(r.exit);
    CHECK(r.exit->exit_code == -1);
    CHECK(r.exit->term_signal == SIGTERM);
}

TEST_CASE("agent_server: env is exactly the given one plus defaults, cwd is applied") {
    AgentHarness h;
    REQUIRE(h.ready());
    char dir[] = "/tmp/h5_cwd_XXXXXX";
    REQUIRE(::mkdtemp(dir) != nullptr);
    auto req =
        exec_req({"sh", "-c",
                  "printf '%s|%s|%s|%s|%s|%s' \"$FOO\" \"$PWD\" \"$TERM\" \"$PATH\" \"$SHELL\" \"$LEAK\""});
    req.env = {"FOO=first", "FOO=bar", "TERM=xterm"};
    req.cwd = dir;
    ::setenv("LEAK", "from-test-process", 1);
    auto r = run_exec(h, 1, req);
    REQUIRE(r.exit);
    CHECK(r.exit->exit_code == 0);
    CHECK(r.out == std::string("bar|") + dir +
                       "|xterm|/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin|/bin/sh|");
    auto env = run_exec(h, 2, exec_req({"env"}));
    REQUIRE(env.exit);
    CHECK(env.out.find("HOME=") != std::string::npos);
    CHECK(env.out.find("USER=") != std::string::npos);
    CHECK(env.out.find("LOGNAME=") != std::string::npos);
    CHECK(env.out.find("LEAK") == std::string::npos);
    ::rmdir(dir);
}

TEST_CASE("agent_server: stdin bytes are delivered and then closed") {
    AgentHarness h;
    REQUIRE(h.ready());
    auto req = exec_req({"cat"}, 1U << 20U);
    // Larger than a pipe buffer, so the agent feeds it from its loop.
    for (int i = 0; i < 200000; ++i) req.stdin_data.push_back(static_cast<std::uint8_t>(i * 31 + (i >> 8)));
    auto r = run_exec(h, 1, req);
    REQUIRE(r.exit);
    CHECK(r.exit->exit_code == 0);
    REQUIRE(r.out.size() == req.stdin_data.size());
    CHECK(std::equal(r.out.begin(), r.out.end(), req.stdin_data.begin(),
                     [](char a, std::uint8_t b) { return static_cast<std::uint8_t>(a) == b; }));
    auto empty = run_exec(h, 2, exec_req({"cat"}));  // no stdin: immediate EOF
    REQUIRE(empty.exit);
    CHECK(empty.out.empty());
}

TEST_CASE("agent_server: argv, env and output are binary-safe") {
    AgentHarness h;
    REQUIRE(h.ready());
    const std::string bytes = all_bytes_from(1);  // NUL cannot be in argv/env
    auto req = exec_req({"sh", "-c", "printf '%s' \"$1\"; printf '%s' \"$V\" >&2", "sh", bytes});
    req.env = {"V=" + bytes};
    auto r = run_exec(h, 1, req);
    REQUIRE(r.exit);
    CHECK(r.out == bytes);
    CHECK(r.err == bytes);
    auto cat = exec_req({"cat"});
    const std::string all = std::string(1, '\0') + bytes;
    cat.stdin_data.assign(all.begin(), all.end());
    auto c = run_exec(h, 2, cat);
    REQUIRE(c.exit);
    CHECK(c.out == all);
    auto nul = exec_req({"echo", std::string("a\0b", 3)});
    auto n = run_exec(h, 3, nul);
    REQUIRE(n.error);
    CHECK(n.error->code == proto::ErrorCode::invalid_argument);
}

TEST_CASE("agent_server: output beyond the cap is discarded and flagged") {
    AgentHarness h;
    REQUIRE(h.ready());
    auto req = exec_req({"sh", "-c", "head -c 100000 /dev/zero; echo e >&2"});
    req.stdout_cap = 1000;
    auto r = run_exec(h, 1, req);
    REQUIRE(r.exit);
    CHECK(r.exit->exit_code == 0);
    CHECK(r.out.size() == 1000);
    CHECK(r.exit->stdout_truncated);
    CHECK(!r.exit->stderr_truncated);
    CHECK(r.err == "e\n");
    auto exact = exec_req({"sh", "-c", "printf 12345"});
    exact.stdout_cap = 5;
    auto x = run_exec(h, 2, exact);
    REQUIRE(x.exit);
    CHECK(x.out == "12345");
    CHECK(!x.exit->stdout_truncated);
}

TEST_CASE("agent_server: output is sent only within the granted credit") {
    AgentHarness h;
    REQUIRE(h.ready());
    auto req = exec_req({"sh", "-c", "head -c 10000 /dev/zero"}, 100);
    REQUIRE(h.send(1, req));
    REQUIRE(h.recv_as<proto::ExecStarted>());
    std::size_t got = 0;
    const auto collect = [&](int ms) {
        while (auto f = h.recv(ms)) {
            auto o = proto::decode_message<proto::ExecOutput>(*f);
            REQUIRE(o);  // no ExecExit while output is held back
            got += o->data.size();
        }
    };
    collect(300);
    CHECK(got == 100);
    REQUIRE(h.send(1, proto::Credit{proto::StreamId::exec_stdout, 1000}));
    collect(300);
    CHECK(got == 1100);
    REQUIRE(h.send(1, proto::Credit{proto::StreamId::exec_stdout, 1U << 20U}));
    std::optional<proto::ExecExit> exit;
    while (auto f = h.recv(2000)) {
        if (auto o = proto::decode_message<proto::ExecOutput>(*f)) got += o->data.size();
        if (auto x = proto::decode_message<proto::ExecExit>(*f)) {
            exit = *x;
            break;
        }
    }
    REQUIRE(exit);
    CHECK(got == 10000);
    CHECK(exit->exit_code == 0);
}

TEST_CASE("agent_server: a ping is answered promptly during an output flood") {
    auto opt = test_options();
    opt.bulk_chunk = 4096;
    opt.max_bulk_queue = 512 * 1024;  // 128 frames could be queued ahead of it
    AgentHarness h(opt, 4096);
    h.set_read_size(512);  // hold less than one frame on this side
    REQUIRE(h.ready());
    auto req = exec_req({"yes"}, 0xffffffffU);
    req.stdout_cap = ~0ULL;
    REQUIRE(h.send(1, req));
    REQUIRE(h.recv_as<proto::ExecStarted>());
    for (int i = 0; i < 100; ++i) REQUIRE(h.recv());  // steady flood
    REQUIRE(h.send(2, proto::Ping{42}));
    // Count bytes, not frames: how much output each frame carries depends on
    // how much `yes` had written when the agent read its pipe (scheduling),
    // while what the pong may wait behind is bounded in bytes: the frame
    // being written plus what the (small) socket buffer holds.
    std::size_t bytes_before = 0;
    int frames_before = 0;
    bool ponged = false;
    while (auto f = h.recv()) {
        if (f->type == proto::MessageType::pong) {
            CHECK(f->request_id == 2);
            ponged = true;
            break;
        }
        bytes_before += f->payload.size();
        if (++frames_before > 1000) break;
    }
    REQUIRE(ponged);
    MESSAGE("before the pong: " << frames_before << " frames, " << bytes_before << " bytes");
    // Far less than the 512 KiB the agent may queue ahead of it.
    CHECK(bytes_before <= 64 * 1024);
    REQUIRE(h.send(1, proto::Cancel{}));
    std::optional<proto::ExecExit> exit;
    for (int i = 0; i < 2000 && !exit; ++i) {
        auto f = h.recv();
        if (!f) break;
        if (auto x = proto::decode_message<proto::ExecExit>(*f)) exit = *x;
    }
    REQUIRE(exit);
    CHECK(exit->term_signal == SIGKILL);
}

TEST_CASE("agent_server: timeout kills the whole process group") {
    AgentHarness h;
    REQUIRE(h.ready());
    auto req = exec_req({"sh", "-c", "sleep 100 & sleep 100"});
    req.timeout_ms = 500;
    const auto t0 = std::chrono::steady_clock::now();
    auto r = run_exec(h, 1, req);
    REQUIRE(r.exit);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(1500));
    CHECK(r.exit->timed_out);
    CHECK(r.exit->exit_code == -1);
    CHECK(r.exit->term_signal == SIGKILL);
    REQUIRE(r.pid > 0);
    CHECK(::kill(-static_cast<pid_t>(r.pid), 0) != 0);
    CHECK(errno == ESRCH);
}

TEST_CASE("agent_server: cancel kills the exec, which still ends with ExecExit") {
    AgentHarness h;
    REQUIRE(h.ready());
    REQUIRE(h.send(1, exec_req({"sh", "-c", "sleep 100 & sleep 100"})));
    auto started = h.recv_as<proto::ExecStarted>();
    REQUIRE(started);
    REQUIRE(h.send(1, proto::Cancel{}));
    auto exit = h.recv_as<proto::ExecExit>();
    REQUIRE(exit);
    CHECK(!exit->timed_out);
    CHECK(exit->term_signal == SIGKILL);
    CHECK(group_gone(static_cast<pid_t>(started->pid), 200));
    // Cancelling a finished or unknown id is ignored: the next ping is the next reply.
    REQUIRE(h.send(1, proto::Cancel{}));
    REQUIRE(h.send(99, proto::Cancel{}));
    auto reply = h.request(5, proto::Ping{1});
    REQUIRE(reply);
    CHECK(std::holds_alternative<proto::Pong>(*reply));
}

TEST_CASE("agent_server: a missing binary exits 127 with a message, like a shell") {
    AgentHarness h;
    REQUIRE(h.ready());
    auto r = run_exec(h, 1, exec_req({"forkvm-no-such-program"}));
    REQUIRE(r.exit);
    CHECK(r.exit->exit_code == 127);
    CHECK(r.err.find("not found") != std::string::npos);
    auto p = run_exec(h, 2, exec_req({"/nonexistent/prog"}));
    REQUIRE(p.exit);
    CHECK(p.exit->exit_code == 127);
    auto d = run_exec(h, 3, exec_req({"/tmp"}));  // not executable
    REQUIRE(d.exit);
    CHECK(d.exit->exit_code == 126);
}

TEST_CASE("agent_server: a background child holding stdout does not block ExecExit") {
    AgentHarness h;
    REQUIRE(h.ready());
    const auto t0 = std::chrono::steady_clock::now();
    auto r = run_exec(h, 1, exec_req({"sh", "-c", "sleep 5 & echo $!"}));
    REQUIRE(r.exit);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(1500));
    CHECK(r.exit->exit_code == 0);
    const int bg = std::atoi(r.out.c_str());
    REQUIRE(bg > 0);
    ::kill(bg, SIGKILL);
}

TEST_CASE("agent_server: invalid exec requests get an Error") {
    AgentHarness h;
    REQUIRE(h.ready());
    const auto code = [&](std::uint32_t id, const proto::ExecStart& req) {
        auto r = run_exec(h, id, req);
        return r.error ? r.error->code : proto::ErrorCode::internal;
    };
    CHECK(code(1, exec_req({})) == proto::ErrorCode::invalid_argument);
    auto user = exec_req({"true"});
    user.user = "forkvm-no-such-user";
    CHECK(code(2, user) == proto::ErrorCode::not_found);
    auto cwd = exec_req({"true"});
    cwd.cwd = "/nonexistent/dir";
    CHECK(code(3, cwd) == proto::ErrorCode::not_found);
    auto rel = exec_req({"true"});
    rel.cwd = "relative";
    CHECK(code(4, rel) == proto::ErrorCode::invalid_argument);
    auto env = exec_req({"true"});
    env.env = {"NOEQUALS"};
    CHECK(code(5, env) == proto::ErrorCode::invalid_argument);
    CHECK(code(0, exec_req({"true"})) == proto::ErrorCode::invalid_argument);
    // A duplicate id while the first exec runs.
    REQUIRE(h.send(6, exec_req({"sleep", "100"})));
    REQUIRE(h.recv_as<proto::ExecStarted>());
    auto dup = h.request(6, exec_req({"true"}));
    REQUIRE(dup);
    REQUIRE(std::holds_alternative<proto::Error>(*dup));
    CHECK(std::get<proto::Error>(*dup).code == proto::ErrorCode::invalid_argument);
    REQUIRE(h.send(6, proto::Cancel{}));
    CHECK(h.recv_as<proto::ExecExit>());
}

TEST_CASE("agent_server: exec drops privileges to the requested user") {
    if (::geteuid() != 0) return;  // only root can switch users
    auto opt = test_options();
    AgentHarness h(opt);
    REQUIRE(h.ready());
    auto req = exec_req({"sh", "-c", "id -u; id -g"});
    req.user = "nobody";
    req.cwd = "/";
    auto r = run_exec(h, 1, req);
    if (r.error) {
        CHECK(r.error->code == proto::ErrorCode::not_found);  // no "nobody" on this host
        return;
    }
    REQUIRE(r.exit);
    CHECK(r.exit->exit_code == 0);
    CHECK(r.out.substr(0, 2) != "0\n");
    auto root = exec_req({"id", "-u"});
    root.user = "root";
    auto rr = run_exec(h, 2, root);
    REQUIRE(rr.exit);
    CHECK(rr.out == "0\n");
}

TEST_CASE("agent_server: malformed frames are skipped and the agent keeps serving") {
    AgentHarness h;
    REQUIRE(h.ready());
    proto::Bytes junk = {'x', 'y', 'F', 'K', 'V', 'F', 0, 1, 2, 3};
    REQUIRE(h.send_raw(junk));
    // A frame with a broken CRC.
    auto bad = proto::encode_message(3, proto::Ping{1});
    REQUIRE(bad);
    bad->back() ^= 0xffU;
    REQUIRE(h.send_raw(*bad));
    // A declared length beyond the payload cap.
    auto huge = proto::encode_message(4, proto::Ping{2});
    REQUIRE(huge);
    (*huge)[15] = 0x7f;
    REQUIRE(h.send_raw(*huge));
    auto reply = h.request(9, proto::Ping{77});
    REQUIRE(reply);
    REQUIRE(std::holds_alternative<proto::Pong>(*reply));
    CHECK(std::get<proto::Pong>(*reply).nonce == 77);
    // A valid frame whose payload does not decode: Error{protocol}.
    proto::Bytes short_ping;
    REQUIRE(proto::append_frame(short_ping, proto::MessageType::ping, 10, proto::Bytes{1, 2, 3}) ==
            proto::ProtoError::none);
    REQUIRE(h.send_raw(short_ping));
    auto err = h.recv_as<proto::Error>();
    REQUIRE(err);
    CHECK(err->code == proto::ErrorCode::protocol);
    // A message only the agent sends.
    auto unexpected = h.request(11, proto::Ok{});
    REQUIRE(unexpected);
    REQUIRE(std::holds_alternative<proto::Error>(*unexpected));
    CHECK(std::get<proto::Error>(*unexpected).code == proto::ErrorCode::protocol);
}
