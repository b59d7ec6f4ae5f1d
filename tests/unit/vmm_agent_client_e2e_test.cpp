// AgentClient against the real agent: forkvm::agent::serve() runs in a forked
// child on one end of a socketpair (no VM), the client on the other.

#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <doctest/doctest.h>
#include <filesystem>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>

#include "guest/agent/options.hpp"
#include "guest/agent/server.hpp"
#include "vmm/agent_client.hpp"

using namespace std::chrono_literals;
namespace vmm = forkvm::vmm;
namespace proto = forkvm::proto;

namespace {

// The agent in a child process; the client owns the host end.
class RealAgent {
public:
    RealAgent() {
        forkvm::agent::Options options;
        if (const passwd* pw = ::getpwuid(::geteuid())) options.default_user = pw->pw_name;
        int sv[2];
        REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        pid_ = ::fork();
        REQUIRE(pid_ >= 0);
        if (pid_ == 0) {
            ::close(sv[0]);
            ::_exit(forkvm::agent::serve(sv[1], options));
        }
        ::close(sv[1]);
        client = std::make_unique<vmm::AgentClient>(forkvm::UniqueFd(sv[0]));
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
