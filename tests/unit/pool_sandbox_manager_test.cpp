// SandboxManager against fake VMs that run the REAL guest agent: each fake
// PooledVm forks a child process serving the agent protocol on a socketpair
// (no KVM), with a vmm::AgentClient on the host end, so exec and file calls
// really run. A fake's fork() starts a fresh agent child (no shared state,
// fine for a fake) and records the call. The registry's clock is injected so
// TTL tests advance time instead of sleeping.

#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <doctest/doctest.h>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "guest/agent/server.hpp"
#include "guest/agent/test_harness.hpp"
#include "pool/agent_error_mapping.hpp"
#include "pool/sandbox_manager.hpp"
#include "pool/service_error.hpp"
#include "pool/warm_pool.hpp"
#include "tests/support/fake_snapshot.hpp"
#include "tests/support/loopback.hpp"
#include "vmm/agent_client.hpp"

using namespace std::chrono_literals;
namespace pool = forkvm::pool;
namespace vmm = forkvm::vmm;
namespace proto = forkvm::proto;
using pool::ErrorCode;
using pool::SandboxManager;
using pool::SandboxState;
using pool::ServiceError;

namespace {

// Everything the fakes did; outlives the pool, the manager and every VM.
struct World {
    std::mutex mutex;
    std::condition_variable cv;
    std::atomic<int> live{0};                    // fake VMs made and not destroyed
    bool source_fails = false;                   // fork_paused throws
    int vm_forks = 0;                            // PooledVm::fork calls
    int vm_fork_fail_at = -1;                    // the vm_forks value at which PooledVm::fork throws
    std::string vm_fork_error = "clone failed";  // what a failing fork throws
    int in_vm_fork = 0;
    std::chrono::milliseconds vm_fork_delay{0};
    std::set<std::string> destroyed;
    std::map<std::string, pid_t> agents;            // vm id -> agent pid (live VMs)
    int snapshots = 0;                              // PooledVm::snapshot calls
    std::map<std::string, std::string> identities;  // vm id -> identity given at resume
    bool snapshot_fails = false;
    std::map<std::string, std::string> stop_reasons;  // vm id -> what PooledVm::stop_reason says
    // The agent of the next VM made listens for egress proxy clients here
    // (one VM only: the port is the test's own).
    std::uint16_t proxy_port = 0;

    bool was_destroyed(const std::string& vm_id) {
        const std::lock_guard lock(mutex);
        return destroyed.count(vm_id) != 0;
    }
    // The VM is destroyed by the last thread out of it, which may be the
    // sweeper's liveness check rather than the test's own call: wait a bit.
    bool destroyed_soon(const std::string& vm_id) {
        std::unique_lock lock(mutex);
        return cv.wait_for(lock, std::chrono::seconds(10), [&] { return destroyed.count(vm_id) != 0; });
    }
    void kill_agent(const std::string& vm_id) {
        pid_t pid = -1;
        {
            const std::lock_guard lock(mutex);
            pid = agents.at(vm_id);
        }
        ::kill(pid, SIGKILL);
    }
};

std::string current_user() {
    const passwd* pw = ::getpwuid(::geteuid());
    return pw != nullptr ? pw->pw_name : "root";
}

class AgentVm final : public pool::PooledVm {
public:
    AgentVm(World& world, std::string id) : world_(world), id_(std::move(id)) {
        forkvm::agent::Options options = forkvm::agent::testing::test_options();
        {
            const std::lock_guard lock(world_.mutex);
            options.proxy_port = std::exchange(world_.proxy_port, 0);
        }
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            throw std::runtime_error("socketpair");
        pid_ = ::fork();
        if (pid_ < 0) {
            ::close(sv[0]);
            ::close(sv[1]);
            throw std::runtime_error("fork");
        }
        if (pid_ == 0) {
            // Drop every other fd, above all the host ends of other fakes'
            // channels: a copy kept open here would hide their EOF.
            if (::dup2(sv[1], 3) != 3) ::_exit(120);
            for (int fd = 4; fd < 4096; ++fd) ::close(fd);
            ::_exit(forkvm::agent::serve(3, options));
        }
        ::close(sv[1]);
        client_ = std::make_unique<vmm::AgentClient>(forkvm::UniqueFd(sv[0]));
        {
            const std::lock_guard lock(world_.mutex);
            world_.agents[id_] = pid_;
        }
        ++world_.live;
    }
    ~AgentVm() override { destroy(); }

    std::string id() const override { return id_; }
    void resume(const std::string& identity) override {
        (void)client_->wait_ready(10s);
        const std::lock_guard lock(world_.mutex);
        world_.identities[id_] = identity;
    }
    bool healthy() override { return client_->state() == vmm::AgentClient::State::healthy; }
    void destroy() noexcept override {
        if (destroyed_.exchange(true)) return;
        client_->close();  // EOF: the agent returns from serve() and ends its commands
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
        {
            const std::lock_guard lock(world_.mutex);
            world_.destroyed.insert(id_);
            world_.agents.erase(id_);
        }
        --world_.live;
        world_.cv.notify_all();
    }
    vmm::AgentClient& agent() override { return *client_; }
    std::unique_ptr<pool::PooledVm> fork(const std::string& id) override {
        std::chrono::milliseconds delay{0};
        {
            const std::lock_guard lock(world_.mutex);
            ++world_.vm_forks;
            ++world_.in_vm_fork;
            delay = world_.vm_fork_delay;
            if (world_.vm_forks == world_.vm_fork_fail_at) {
                --world_.in_vm_fork;
                throw std::runtime_error(world_.vm_fork_error);
            }
        }
        world_.cv.notify_all();
        std::this_thread::sleep_for(delay);
        auto clone = std::make_unique<AgentVm>(world_, id);
        clone->resume("");
        {
            const std::lock_guard lock(world_.mutex);
            --world_.in_vm_fork;
        }
        return clone;
    }
    void snapshot(const std::string& dir) override {
        {
            const std::lock_guard lock(world_.mutex);
            ++world_.snapshots;
            if (world_.snapshot_fails) throw std::runtime_error("snapshot failed: disk on fire");
        }
        forkvm::test::write_fake_snapshot(dir, 's');
    }
    std::string console_tail() noexcept override { return "console of " + id_; }
    std::string stop_reason() noexcept override {
        const std::lock_guard lock(world_.mutex);
        auto it = world_.stop_reasons.find(id_);
        return it == world_.stop_reasons.end() ? "" : it->second;
    }

private:
    World& world_;
    std::string id_;
    pid_t pid_ = -1;
    std::unique_ptr<vmm::AgentClient> client_;
    std::atomic<bool> destroyed_{false};
};

class FakeVmSource final : public pool::VmSource {
public:
    explicit FakeVmSource(World& world) : world_(world) {}
    std::unique_ptr<pool::PooledVm> fork_paused(const std::string& id) override {
        {
            const std::lock_guard lock(world_.mutex);
            if (world_.source_fails) throw std::runtime_error("no VMs today");
        }
        return std::make_unique<AgentVm>(world_, id);
    }

private:
    World& world_;
};

// Wall time plus an offset that tests move forward.
struct FakeClock {
    std::shared_ptr<std::atomic<std::int64_t>> offset_ms = std::make_shared<std::atomic<std::int64_t>>(0);
    pool::SandboxRegistry::Clock clock() const {
        return [o = offset_ms] {
            return std::chrono::system_clock::now() + std::chrono::milliseconds(o->load());
        };
    }
    void advance(std::chrono::milliseconds d) { offset_ms->fetch_add(d.count()); }
};

pool::PoolSettings pool_settings() {
    pool::PoolSettings s;
    s.min_warm = 1;
    s.max_warm = 2;
    s.lease_wait = 10s;
    s.backoff_initial = 1ms;
    s.backoff_max = 5ms;
    return s;
}

pool::ManagerSettings manager_settings() {
    pool::ManagerSettings s;
    s.registry.max_sandboxes = 10;
    s.registry.max_per_key = 10;
    s.max_fork_count = 3;
    s.fork_wait = 200ms;
    s.default_exec_timeout = 10s;
    s.max_exec_timeout = 60s;
    s.sweep_interval = 20ms;
    return s;
}

// One world, source, pool and manager; torn down in the right order.
struct Fixture {
    explicit Fixture(pool::ManagerSettings ms = manager_settings(), pool::PoolSettings ps = pool_settings())
        : source(world), warm(source, ps), manager(warm, ms, clock.clock()) {}
    ~Fixture() {
        manager.shutdown();
        warm.shutdown();
    }
    World world;
    FakeClock clock;
    FakeVmSource source;
    pool::WarmPool warm;
    SandboxManager manager;
};

ServiceError error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const ServiceError& e) {
        return e;
    }
    FAIL("expected a ServiceError");
    return ServiceError::internal("no error");
}

pool::ExecCall sh(std::string script) {
    pool::ExecCall c;
    c.argv = {"/bin/sh", "-c", std::move(script)};
    return c;
}

// The fake VM behind a sandbox (its console tail names it).
std::string vm_of(SandboxManager& m, const std::string& owner, const std::string& id) {
    const std::string tail = m.console_tail(owner, id);
    const std::string prefix = "console of ";
    REQUIRE(tail.rfind(prefix, 0) == 0);
    return tail.substr(prefix.size());
}

std::string temp_dir() {
    char tmpl[] = "/tmp/forkvm-s2-XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    return tmpl;
}

}  // namespace

TEST_CASE("pool: agent errors map to service errors in one place") {
    using C = vmm::AgentErrorCode;
    const pool::AgentCallContext ctx{"/data/x", "path"};
    const auto map = [&](C c) { return pool::to_service_error(vmm::AgentError(c, "msg"), ctx); };
    CHECK(map(C::not_found).code() == ErrorCode::not_found);
    CHECK(map(C::not_found).message().find("/data/x") != std::string::npos);
    CHECK(map(C::permission_denied).code() == ErrorCode::forbidden);
    for (C c : {C::already_exists, C::not_a_directory, C::is_a_directory, C::not_empty, C::busy})
        CHECK(map(c).code() == ErrorCode::conflict);
    CHECK(map(C::invalid_argument).code() == ErrorCode::invalid_argument);
    CHECK(map(C::invalid_argument).field() == std::optional<std::string>("path"));
    CHECK(map(C::unsupported).code() == ErrorCode::invalid_argument);
    CHECK(map(C::too_large).code() == ErrorCode::payload_too_large);
    CHECK(map(C::timeout).code() == ErrorCode::timeout);
    CHECK(map(C::broken).code() == ErrorCode::vm_broken);
    CHECK(map(C::closed).code() == ErrorCode::vm_broken);
    for (C c : {C::io, C::internal, C::protocol}) CHECK(map(c).code() == ErrorCode::guest_error);
    CHECK(pool::to_service_error(vmm::AgentError(C::invalid_argument, "bad")).field() == std::nullopt);
    CHECK(pool::is_channel_lost(C::closed));
    CHECK_FALSE(pool::is_channel_lost(C::timeout));
}

TEST_CASE("pool: manager creates, gets, lists with label filters and pages") {
    Fixture f;
    auto& m = f.manager;
    REQUIRE(f.warm.wait_warm(1, 10s));
    CHECK(m.ready());

    std::vector<std::string> ids;
    for (int i = 0; i < 5; ++i) {
        pool::CreateSandbox req;
        req.labels = {{"team", i % 2 == 0 ? "a" : "b"}, {"n", std::to_string(i)}};
        req.env = {{"K", "v"}};
        const pool::Sandbox s = m.create("alice", req);
        CHECK(s.info.state == SandboxState::running);
        CHECK(s.info.id.rfind("sb-", 0) == 0);
        CHECK(s.info.id.size() == 23);
        CHECK(s.env == pool::EnvMap{{"K", "v"}});
        ids.push_back(s.info.id);
    }
    (void)m.create("bob", {});

    const pool::Sandbox got = m.get("alice", ids[2]);
    CHECK(got.info.labels.at("n") == "2");
    CHECK(got.env.at("K") == "v");
    CHECK(got.info.state == SandboxState::running);

    // Another owner sees nothing of alice's.
    CHECK(error_of([&] { (void)m.get("bob", ids[0]); }).code() == ErrorCode::not_found);
    CHECK(error_of([&] { (void)m.exec_buffered("bob", ids[0], sh("true"), {}); }).code() ==
          ErrorCode::not_found);
    CHECK(error_of([&] { m.remove("bob", ids[0]); }).code() == ErrorCode::not_found);
    CHECK(error_of([&] { (void)m.get("alice", "sb-nope"); }).code() == ErrorCode::not_found);

    // Label filter: every pair must match.
    pool::ListSandboxes filter;
    filter.label_filter = {{"team", "a"}};
    const auto team_a = m.list("alice", filter);
    REQUIRE(team_a.sandboxes.size() == 3);
    CHECK(team_a.sandboxes[0].info.id == ids[0]);
    CHECK(team_a.sandboxes[2].info.id == ids[4]);
    CHECK(team_a.next_page_token.empty());
    filter.label_filter = {{"team", "a"}, {"n", "2"}};
    CHECK(m.list("alice", filter).sandboxes.size() == 1);

    // Pages of 2: 2 + 2 + 1, oldest first, nothing lost or repeated.
    pool::ListSandboxes page_req;
    page_req.limit = 2;
    std::vector<std::string> seen;
    int pages = 0;
    do {
        const auto page = m.list("alice", page_req);
        ++pages;
        for (const auto& s : page.sandboxes) seen.push_back(s.info.id);
        page_req.page_token = page.next_page_token;
        REQUIRE(pages <= 3);
    } while (!page_req.page_token.empty());
    CHECK(pages == 3);
    CHECK(seen == ids);

    pool::ListSandboxes bad;
    bad.page_token = "!!not-a-token";
    auto e = error_of([&] { (void)m.list("alice", bad); });
    CHECK(e.code() == ErrorCode::invalid_argument);
    CHECK(e.field() == std::optional<std::string>("page_token"));
    bad.page_token = "Zm9v";  // base64 of "foo": decodes, but is no token
    CHECK(error_of([&] { (void)m.list("alice", bad); }).field() == std::optional<std::string>("page_token"));
    pool::ListSandboxes zero;
    zero.limit = 0;
    CHECK(error_of([&] { (void)m.list("alice", zero); }).field() == std::optional<std::string>("limit"));
    zero.limit = 1001;
    CHECK(error_of([&] { (void)m.list("alice", zero); }).field() == std::optional<std::string>("limit"));

    // remove destroys the VM at once and the id is gone.
    const std::string vm = vm_of(m, "alice", ids[1]);
    m.remove("alice", ids[1]);
    CHECK(f.world.destroyed_soon(vm));
    CHECK(error_of([&] { (void)m.get("alice", ids[1]); }).code() == ErrorCode::not_found);
    CHECK(m.list("alice", {}).sandboxes.size() == 4);
    const auto st = m.stats();
    CHECK(st.sandboxes_created == 6);
    CHECK(st.live_sandboxes == 5);
    CHECK(st.max_warm == 2);
}

TEST_CASE("pool: manager caps: capacity_exhausted, rate_limited, and a failed lease rolls back") {
    SUBCASE("caps") {
        auto ms = manager_settings();
        ms.registry.max_sandboxes = 3;
        ms.registry.max_per_key = 2;
        Fixture f(ms);
        (void)f.manager.create("alice", {});
        (void)f.manager.create("alice", {});
        const auto limited = error_of([&] { (void)f.manager.create("alice", {}); });
        CHECK(limited.code() == ErrorCode::rate_limited);
        CHECK(limited.retry_after_seconds().has_value());
        (void)f.manager.create("bob", {});
        CHECK(error_of([&] { (void)f.manager.create("carol", {}); }).code() == ErrorCode::capacity_exhausted);
        CHECK(f.manager.stats().live_sandboxes == 3);
    }
    SUBCASE("lease failure") {
        auto ps = pool_settings();
        ps.min_warm = 0;
        ps.lease_wait = 1s;
        auto ms = manager_settings();
        ms.registry.max_sandboxes = 1;
        Fixture f(ms, ps);
        f.world.source_fails = true;  // before any fork: min_warm 0 forks nothing until a lease waits
        CHECK(error_of([&] { (void)f.manager.create("alice", {}); }).code() == ErrorCode::capacity_exhausted);
        CHECK(f.manager.stats().live_sandboxes == 0);
        CHECK(f.manager.list("alice", {}).sandboxes.empty());
        {
            const std::lock_guard lock(f.world.mutex);
            f.world.source_fails = false;
        }
        // The slot of the failed create is free again.
        CHECK(f.manager.create("alice", {}).info.state == SandboxState::running);
    }
}

TEST_CASE("pool: manager answers insufficient_memory below the host memory reserve") {
    auto ms = manager_settings();
    auto available = std::make_shared<std::atomic<std::uint64_t>>(4ULL << 30U);
    ms.min_free_memory = 1ULL << 30U;
    ms.memory_probe = [available]() -> std::optional<std::uint64_t> { return available->load(); };
    Fixture f(ms);
    const auto sb = f.manager.create("alice", {});
    available->store(512ULL << 20U);
    const auto short_create = error_of([&] { (void)f.manager.create("alice", {}); });
    CHECK(short_create.code() == ErrorCode::insufficient_memory);
    CHECK(short_create.retry_after_seconds().has_value());
    CHECK(short_create.message().find("512 MiB available") != std::string::npos);
    CHECK(error_of([&] { (void)f.manager.fork("alice", sb.info.id, {}); }).code() ==
          ErrorCode::insufficient_memory);
    CHECK(f.manager.stats().live_sandboxes == 1);  // nothing half-made
    available->store(2ULL << 30U);
    CHECK(f.manager.create("alice", {}).info.state == SandboxState::running);
}

TEST_CASE("pool: manager expires sandboxes on their TTL and keep_alive extends it") {
    auto ms = manager_settings();
    ms.sweep_interval = 1h;  // sweeps are driven by the test
    Fixture f(ms);
    auto& m = f.manager;
    pool::CreateSandbox req;
    req.ttl = 1000ms;
    const std::string short_id = m.create("alice", req).info.id;
    const std::string kept_id = m.create("alice", req).info.id;
    const std::string short_vm = vm_of(m, "alice", short_id);
    const std::string kept_vm = vm_of(m, "alice", kept_id);

    const auto before = m.get("alice", kept_id).info.expires;
    const pool::Sandbox kept = m.keep_alive("alice", kept_id, 10s);
    CHECK(kept.info.expires > before);
    CHECK(error_of([&] { (void)m.keep_alive("bob", kept_id, 10s); }).code() == ErrorCode::not_found);

    f.clock.advance(2s);
    CHECK(error_of([&] { (void)m.get("alice", short_id); }).code() == ErrorCode::expired);  // due, not swept
    m.sweep();
    CHECK(f.world.was_destroyed(short_vm));
    CHECK_FALSE(f.world.was_destroyed(kept_vm));
    CHECK(error_of([&] { (void)m.get("alice", short_id); }).code() == ErrorCode::expired);
    CHECK(error_of([&] { (void)m.exec_buffered("alice", short_id, sh("true"), {}); }).code() ==
          ErrorCode::expired);
    CHECK(m.get("alice", kept_id).info.state == SandboxState::running);
    CHECK(m.stats().sandboxes_expired == 1);

    f.clock.advance(20s);
    m.sweep();
    CHECK(f.world.was_destroyed(kept_vm));
    CHECK(m.stats().live_sandboxes == 0);
}

TEST_CASE("pool: manager exec runs the command with merged env, defaults, caps, timeout and cancel") {
    auto ms = manager_settings();
    ms.max_output_bytes = 64;
    ms.max_exec_timeout = 20s;
    Fixture f(ms);
    auto& m = f.manager;
    pool::CreateSandbox req;
    req.env = {{"A", "1"}, {"B", "2"}};
    req.user = current_user();
    const std::string id = m.create("alice", req).info.id;

    pool::ExecCall argv;
    argv.argv = {"/bin/echo", "hello", "world"};
    auto r = m.exec_buffered("alice", id, argv, {});
    CHECK(r.exit_code == 0);
    CHECK(r.stdout_data == "hello world\n");

    auto env_call = sh("echo $A-$B-$C; id -un; pwd; cat; exit 7");
    env_call.env = {{"B", "3"}, {"C", "4"}};
    env_call.cwd = "/tmp";
    env_call.stdin_data = "from stdin";
    r = m.exec_buffered("alice", id, env_call, {});
    CHECK(r.exit_code == 7);
    CHECK(r.stdout_data == "1-3-4\n" + current_user() + "\n/tmp\nfrom stdin");

    auto bad_user = sh("true");
    bad_user.user = "no-such-user-s2";
    CHECK(error_of([&] { (void)m.exec_buffered("alice", id, bad_user, {}); }).code() == ErrorCode::not_found);

    // Output: the call's cap, and the service's cap above it.
    auto loud = sh("printf '%0100d' 0");
    loud.max_output_bytes = 10;
    r = m.exec_buffered("alice", id, loud, {});
    CHECK(r.stdout_data == std::string(10, '0'));
    CHECK(r.stdout_truncated);
    loud.max_output_bytes = 1 << 20;
    r = m.exec_buffered("alice", id, loud, {});
    CHECK(r.stdout_data.size() == 64);
    CHECK(r.stdout_truncated);

    // Streaming goes through the callbacks.
    std::string streamed;
    vmm::ExecCallbacks cb;
    cb.on_stdout = [&](vmm::ByteView d) { streamed.append(d.begin(), d.end()); };
    const auto streamed_result = m.exec("alice", id, sh("echo streamed"), cb, {});
    CHECK(streamed_result.exit_code == 0);
    CHECK(streamed == "streamed\n");

    auto slow = sh("sleep 10");
    slow.timeout = 200ms;
    r = m.exec_buffered("alice", id, slow, {});
    CHECK(r.timed_out);
    slow.timeout = 21s;
    const auto too_long = error_of([&] { (void)m.exec_buffered("alice", id, slow, {}); });
    CHECK(too_long.code() == ErrorCode::invalid_argument);
    CHECK(too_long.field() == std::optional<std::string>("timeout_ms"));
    CHECK(error_of([&] { (void)m.exec_buffered("alice", id, pool::ExecCall{}, {}); }).field() ==
          std::optional<std::string>("cmd"));

    // A stop request (the client went away) kills the running command.
    std::stop_source stop;
    vmm::ExecCallbacks stop_when_started;
    stop_when_started.on_started = [&](std::uint32_t) { stop.request_stop(); };
    slow.timeout = 0ms;
    const auto t0 = std::chrono::steady_clock::now();
    const vmm::ExecResult stopped = m.exec("alice", id, slow, stop_when_started, stop.get_token());
    CHECK(stopped.cancelled);
    CHECK(std::chrono::steady_clock::now() - t0 < 8s);

    const auto st = m.stats();
    CHECK(st.execs >= 7);
    std::uint64_t samples = 0;
    for (auto n : st.exec_latency_buckets) samples += n;
    CHECK(samples == st.execs);
}

TEST_CASE("pool: manager file calls round-trip and map guest errors") {
    Fixture f;
    auto& m = f.manager;
    const std::string id = m.create("alice", {}).info.id;
    const std::string dir = temp_dir();

    const std::string content = "file content\n";
    std::size_t sent = 0;
    const vmm::DataSource source = [&](std::span<std::uint8_t> buf) {
        const std::size_t n = std::min(buf.size(), content.size() - sent);
        std::memcpy(buf.data(), content.data() + sent, n);
        sent += n;
        return n;
    };
    m.write_file("alice", id, {dir + "/sub/a.txt", 0640, true, false}, content.size(), source, {});
    std::string back;
    const auto rr = m.read_file("alice", id, {dir + "/sub/a.txt", 0, 0},
                                [&](vmm::ByteView d) { back.append(d.begin(), d.end()); }, {});
    CHECK(back == content);
    CHECK(rr.total_bytes == content.size());
    const proto::StatResult st = m.stat("alice", id, dir + "/sub/a.txt");
    CHECK(st.type == proto::FileType::file);
    CHECK(st.size == content.size());
    CHECK(st.mode == 0640);

    m.mkdir("alice", id, dir + "/d", false, 0755);
    m.move("alice", id, dir + "/sub/a.txt", dir + "/d/b.txt");
    const proto::DirEntries listed = m.list_dir("alice", id, dir + "/d");
    REQUIRE(listed.entries.size() == 1);
    CHECK(listed.entries[0].name == "b.txt");

    const auto missing = error_of([&] { (void)m.stat("alice", id, dir + "/nope"); });
    CHECK(missing.code() == ErrorCode::not_found);
    CHECK(missing.message().find(dir + "/nope") != std::string::npos);
    CHECK(error_of([&] { m.mkdir("alice", id, dir + "/d", false, 0755); }).code() == ErrorCode::conflict);
    CHECK(error_of([&] { m.remove_path("alice", id, dir + "/d", false); }).code() == ErrorCode::conflict);
    const auto relative = error_of([&] { (void)m.stat("alice", id, "relative/path"); });
    CHECK(relative.code() == ErrorCode::invalid_argument);
    CHECK(relative.field() == std::optional<std::string>("path"));
    CHECK(error_of([&] { m.move("alice", id, dir + "/d", "x"); }).field() ==
          std::optional<std::string>("to"));

    m.remove_path("alice", id, dir, true);
    CHECK_FALSE(std::filesystem::exists(dir));
    // The sandbox is still fine after guest errors.
    CHECK(m.get("alice", id).info.state == SandboxState::running);
}

TEST_CASE("pool: manager fork clones count, caps, owner and labels, and rolls back on failure") {
    auto ms = manager_settings();
    ms.registry.max_per_key = 4;
    Fixture f(ms);
    auto& m = f.manager;
    pool::CreateSandbox req;
    req.labels = {{"app", "x"}};
    req.env = {{"E", "1"}};
    const std::string src = m.create("alice", req).info.id;

    pool::ForkSandbox two;
    two.count = 2;
    const auto clones = m.fork("alice", src, two);
    REQUIRE(clones.size() == 2);
    for (const auto& c : clones) {
        CHECK(c.info.owner == "alice");
        CHECK(c.info.labels == pool::Labels{{"app", "x"}});
        CHECK(c.env == pool::EnvMap{{"E", "1"}});
        CHECK(c.info.state == SandboxState::running);
        CHECK(m.get("alice", c.info.id).info.id == c.info.id);
        CHECK(error_of([&] { (void)m.get("bob", c.info.id); }).code() == ErrorCode::not_found);
        CHECK(m.exec_buffered("alice", c.info.id, sh("echo $E"), {}).stdout_data == "1\n");
    }
    {
        const std::lock_guard lock(f.world.mutex);
        CHECK(f.world.vm_forks == 2);
    }
    auto st = m.stats();
    CHECK(st.sandbox_forks == 2);
    std::uint64_t samples = 0;
    for (auto n : st.fork_latency_buckets) samples += n;
    CHECK(samples == 2);

    pool::ForkSandbox labelled;
    labelled.labels = {{"role", "clone"}};
    const auto third = m.fork("alice", src, labelled);
    CHECK(third.at(0).info.labels == pool::Labels{{"role", "clone"}});

    // 4 live now (max_per_key 4): one more clone hits the cap, nothing is kept.
    const int live_before = f.world.live.load();
    CHECK(error_of([&] { (void)m.fork("alice", src, {}); }).code() == ErrorCode::rate_limited);
    CHECK(f.manager.stats().live_sandboxes == 4);

    pool::ForkSandbox too_many;
    too_many.count = 4;
    CHECK(error_of([&] { (void)m.fork("alice", src, too_many); }).field() ==
          std::optional<std::string>("count"));
    too_many.count = 0;
    CHECK(error_of([&] { (void)m.fork("alice", src, too_many); }).field() ==
          std::optional<std::string>("count"));
    CHECK(error_of([&] { (void)m.fork("bob", src, {}); }).code() == ErrorCode::not_found);

    // A failure at the second clone destroys the first.
    m.remove("alice", third.at(0).info.id);
    m.remove("alice", clones.at(0).info.id);
    {
        const std::lock_guard lock(f.world.mutex);
        f.world.vm_fork_fail_at = f.world.vm_forks + 2;
    }
    CHECK(error_of([&] { (void)m.fork("alice", src, two); }).code() == ErrorCode::vm_broken);
    CHECK(m.stats().live_sandboxes == 2);
    CHECK(m.list("alice", {}).sandboxes.size() == 2);
    CHECK(m.stats().fork_failures == 1);
    CHECK(f.world.live.load() <= live_before);

    // The VM process refusing because its agent channel still carries bytes
    // is a busy sandbox (409), not a broken one.
    {
        const std::lock_guard lock(f.world.mutex);
        f.world.vm_fork_fail_at = f.world.vm_forks + 1;
        f.world.vm_fork_error = "agent channel busy: a fork needs it idle";
    }
    CHECK(error_of([&] { (void)m.fork("alice", src, two); }).code() == ErrorCode::conflict);
    CHECK(m.stats().live_sandboxes == 2);
}

TEST_CASE("pool: manager fork waits for in-flight calls, then answers busy, later calls queue behind it") {
    auto ms = manager_settings();
    ms.fork_wait = 500ms;
    Fixture f(ms);
    auto& m = f.manager;
    const std::string src = m.create("alice", {}).info.id;

    std::mutex mu;
    std::condition_variable cv;
    bool running = false;
    vmm::ExecCallbacks cb;
    cb.on_started = [&](std::uint32_t) {
        {
            const std::lock_guard lock(mu);
            running = true;
        }
        cv.notify_all();
    };
    vmm::ExecResult long_result;
    std::thread runner([&] { long_result = m.exec("alice", src, sh("sleep 2"), cb, {}); });
    {
        std::unique_lock lock(mu);
        REQUIRE(cv.wait_for(lock, 10s, [&] { return running; }));
    }
    const auto busy = error_of([&] { (void)m.fork("alice", src, {}); });
    CHECK(busy.code() == ErrorCode::conflict);
    runner.join();
    CHECK(long_result.exit_code == 0);  // the busy answer did not disturb it
    CHECK(m.stats().fork_failures == 0);

    // A short call finishes within fork_wait: the fork waits for it and succeeds.
    std::thread quick([&] { (void)m.exec_buffered("alice", src, sh("sleep 0.05"), {}); });
    std::this_thread::sleep_for(10ms);
    CHECK(m.fork("alice", src, {}).size() == 1);
    quick.join();

    // A call arriving while a (slow) fork runs waits until the fork is done.
    {
        const std::lock_guard lock(f.world.mutex);
        f.world.vm_fork_delay = 400ms;
    }
    std::atomic<std::int64_t> fork_done_ns{0};
    std::thread forker([&] {
        (void)m.fork("alice", src, {});
        fork_done_ns = std::chrono::steady_clock::now().time_since_epoch().count();
    });
    {
        std::unique_lock lock(f.world.mutex);
        REQUIRE(f.world.cv.wait_for(lock, 10s, [&] { return f.world.in_vm_fork == 1; }));
    }
    (void)m.exec_buffered("alice", src, sh("true"), {});
    const auto exec_done_ns = std::chrono::steady_clock::now().time_since_epoch().count();
    forker.join();
    CHECK(fork_done_ns.load() != 0);
    CHECK(exec_done_ns >=
          fork_done_ns.load() - 50'000'000);  // the fork returns just after releasing the gate
}

TEST_CASE("pool: manager marks a sandbox broken when its VM dies and destroys the VM") {
    Fixture f;
    auto& m = f.manager;
    const std::string a = m.create("alice", {}).info.id;
    const std::string b = m.create("alice", {}).info.id;
    const std::string vm_a = vm_of(m, "alice", a);
    const std::string vm_b = vm_of(m, "alice", b);

    // Found by the next call.
    f.world.kill_agent(vm_a);
    const auto e = error_of([&] {
        for (int i = 0; i < 100; ++i) {
            (void)m.exec_buffered("alice", a, sh("true"), {});
            std::this_thread::sleep_for(20ms);
        }
    });
    CHECK(e.code() == ErrorCode::vm_broken);
    const pool::Sandbox broken = m.get("alice", a);
    CHECK(broken.info.state == SandboxState::broken);
    CHECK_FALSE(broken.info.broken_reason.empty());
    CHECK(f.world.destroyed_soon(vm_a));
    CHECK(error_of([&] { (void)m.stat("alice", a, "/"); }).code() == ErrorCode::vm_broken);
    CHECK(error_of([&] { (void)m.keep_alive("alice", a, 1s); }).code() == ErrorCode::vm_broken);
    CHECK(m.console_tail("alice", a) == "console of " + vm_a);  // kept for diagnosis

    // Found by the sweeper without any call; the VM's own report is kept.
    {
        const std::lock_guard lock(f.world.mutex);
        f.world.stop_reasons[vm_b] = "seccomp: the VM process made a forbidden system call: socket";
    }
    f.world.kill_agent(vm_b);
    bool seen = false;
    for (int i = 0; i < 250 && !seen; ++i) {
        seen = m.get("alice", b).info.state == SandboxState::broken;
        if (!seen) std::this_thread::sleep_for(20ms);
    }
    CHECK(seen);
    CHECK(m.get("alice", b).info.broken_reason ==
          "VM stopped (seccomp: the VM process made a forbidden system call: socket)");
    CHECK(f.world.destroyed_soon(vm_b));

    m.remove("alice", a);
    CHECK(error_of([&] { (void)m.get("alice", a); }).code() == ErrorCode::not_found);
}

TEST_CASE("pool: manager remove during a running exec cuts it off, shutdown destroys every VM") {
    Fixture f;
    auto& m = f.manager;
    const std::string a = m.create("alice", {}).info.id;
    const std::string b = m.create("bob", {}).info.id;
    (void)m.fork("alice", a, {});

    std::optional<ServiceError> cut;
    std::thread runner([&] {
        try {
            (void)m.exec_buffered("alice", a, sh("sleep 20"), {});
        } catch (const ServiceError& e) {
            cut = e;
        }
    });
    std::this_thread::sleep_for(300ms);
    const auto t0 = std::chrono::steady_clock::now();
    m.remove("alice", a);
    runner.join();
    CHECK(std::chrono::steady_clock::now() - t0 < 10s);
    REQUIRE(cut.has_value());
    CHECK(cut->code() == ErrorCode::not_found);

    std::thread long_exec([&] {
        try {
            (void)m.exec_buffered("bob", b, sh("sleep 20"), {});
        } catch (const ServiceError&) {  // unavailable: shut down under it
        }
    });
    std::this_thread::sleep_for(300ms);
    m.shutdown();
    long_exec.join();
    CHECK_FALSE(m.ready());
    CHECK(error_of([&] { (void)m.create("alice", {}); }).code() == ErrorCode::unavailable);
    CHECK(error_of([&] { (void)m.exec_buffered("bob", b, sh("true"), {}); }).code() ==
          ErrorCode::unavailable);
    f.warm.shutdown();
    CHECK(f.world.live.load() == 0);
}

namespace {

// A manager with a snapshot store and templates whose pools fork fake VMs too.
struct CatalogFixture {
    CatalogFixture()
        : root(temp_dir()),
          source(world),
          warm(source, pool_settings()),
          snapshots(pool::SnapshotStoreSettings{root + "/snapshots", 2, 1ULL << 30}),
          templates(snapshots, template_settings(root),
                    [this](const std::string&) { return std::make_unique<FakeVmSource>(world); }),
          manager(warm, manager_settings(), {}, {}, pool::Catalog{&snapshots, &templates}) {}
    ~CatalogFixture() {
        manager.shutdown();
        templates.shutdown();
        warm.shutdown();
        std::filesystem::remove_all(root);
    }
    static pool::TemplateCatalogSettings template_settings(const std::string& root) {
        pool::TemplateCatalogSettings t;
        t.root = root + "/templates";
        t.pool_base = pool_settings();
        return t;
    }
    std::string root;
    World world;
    FakeVmSource source;
    pool::WarmPool warm;
    pool::SnapshotStore snapshots;
    pool::TemplateCatalog templates;
    SandboxManager manager;
};

}  // namespace

TEST_CASE("pool: manager snapshots a sandbox through the fork gate, templates lease from their own pool") {
    CatalogFixture f;
    auto& m = f.manager;
    const std::string src = m.create("alice", {}).info.id;
    const auto snap = m.snapshot("alice", src, {{{"k", "v"}}});
    CHECK(snap.source_sandbox == src);
    CHECK(snap.labels.at("k") == "v");
    CHECK(m.list_snapshots("alice").size() == 1U);
    CHECK(m.list_snapshots("bob").empty());
    CHECK(error_of([&] { (void)m.snapshot("bob", src, {}); }).code() == ErrorCode::not_found);
    CHECK(m.exec_buffered("alice", src, sh("echo still running"), {}).stdout_data == "still running\n");

    // A failing VM snapshot is vm_broken and leaves nothing on disk.
    {
        const std::lock_guard lock(f.world.mutex);
        f.world.snapshot_fails = true;
    }
    CHECK(error_of([&] { (void)m.snapshot("alice", src, {}); }).code() == ErrorCode::vm_broken);
    {
        const std::lock_guard lock(f.world.mutex);
        f.world.snapshot_fails = false;
    }
    std::size_t entries = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(f.root + "/snapshots"))
        ++entries;
    CHECK(entries == 1U);

    // A busy sandbox (a call in flight past fork_wait) answers conflict.
    std::thread runner([&] { (void)m.exec_buffered("alice", src, sh("sleep 1"), {}); });
    std::this_thread::sleep_for(300ms);
    CHECK(error_of([&] { (void)m.snapshot("alice", src, {}); }).code() == ErrorCode::conflict);
    runner.join();

    // Quota: two snapshots per owner in this fixture.
    (void)m.snapshot("alice", src, {});
    CHECK(error_of([&] { (void)m.snapshot("alice", src, {}); }).code() == ErrorCode::rate_limited);

    // A template, and a sandbox from it (its VM comes from the template's pool).
    // Its egress policy goes to each sandbox made from it, unless the sandbox names its own.
    const auto tpl_policy = forkvm::http_proxy::Policy::parse(
        nlohmann::json::parse(R"({"allow": [{"domain": "pypi.org", "ports": [443]}]})"));
    const auto tpl = m.create_template("alice", {"tpl", snap.id, 1, 2, tpl_policy});
    CHECK(tpl.state == pool::TemplateState::ready);
    CHECK(tpl.egress == tpl_policy);
    pool::CreateSandbox from;
    from.template_name = "tpl";
    const auto sb = m.create("alice", from);
    CHECK(sb.template_name == "tpl");
    CHECK(sb.egress == tpl_policy);
    CHECK(m.get("alice", sb.info.id).egress == tpl_policy);
    {
        pool::CreateSandbox own = from;
        own.egress = forkvm::http_proxy::Policy();
        const auto sb2 = m.create("alice", own);
        CHECK(m.get("alice", sb2.info.id).egress == forkvm::http_proxy::Policy());
        m.remove("alice", sb2.info.id);
    }
    {
        // Its VM resumed with the sandbox id as its identity (hostname).
        const std::string vm = vm_of(m, "alice", sb.info.id);
        const std::lock_guard lock(f.world.mutex);
        CHECK(f.world.identities[vm] == sb.info.id);
        CHECK(f.world.identities[vm_of(m, "alice", src)] == src);
    }
    CHECK(m.get("alice", sb.info.id).template_name == "tpl");
    CHECK(m.exec_buffered("alice", sb.info.id, sh("echo from template"), {}).stdout_data ==
          "from template\n");
    const auto pools = m.pools("alice");
    REQUIRE(pools.size() == 2U);
    CHECK(pools[0].template_name.empty());
    CHECK(pools[1].template_name == "tpl");
    CHECK(m.pools("bob").size() == 1U);
    from.template_name = "nope";
    CHECK(error_of([&] { (void)m.create("alice", from); }).code() == ErrorCode::not_found);
    CHECK(error_of([&] { m.remove_snapshot("alice", snap.id); }).code() == ErrorCode::conflict);

    // Deleting the template leaves its sandbox running.
    m.remove_template("alice", "tpl");
    CHECK(m.exec_buffered("alice", sb.info.id, sh("echo alive"), {}).stdout_data == "alive\n");
    m.remove_snapshot("alice", snap.id);
    m.remove("alice", sb.info.id);
}

TEST_CASE(
    "pool: a sandbox's egress policy carries its proxied connections, and a fork waits for them to end") {
    World world;
    const std::uint16_t proxy = forkvm::test::unused_loopback_port();
    world.proxy_port = proxy;  // the first VM's agent: the one the sandbox leases
    FakeClock clock;
    FakeVmSource source(world);
    pool::PoolSettings ps = pool_settings();
    ps.max_warm = 1;
    pool::WarmPool warm(source, ps);
    pool::EgressService egress(forkvm::http_proxy::HostsMap::parse({"up.test=127.0.0.1"}));
    pool::ManagerSettings ms = manager_settings();
    ms.fork_wait = 5s;
    SandboxManager m(warm, ms, clock.clock(), {}, {}, &egress);
    REQUIRE(warm.wait_warm(1, 10s));

    forkvm::test::OneConnectionServer upstream(forkvm::test::OneConnectionServer::answering(
        [](const std::string& got) { return "upstream saw " + got; }));
    const std::string port = std::to_string(upstream.port());
    pool::CreateSandbox req;
    req.egress = forkvm::http_proxy::Policy::parse(nlohmann::json::parse(
        R"({"allow": [{"domain": "up.test", "ports": [)" + port + R"(]}], "allow_private": ["127.0.0.1"]})"));
    const pool::Sandbox sb = m.create("alice", req);
    CHECK(sb.egress == *req.egress);
    CHECK(m.get("alice", sb.info.id).egress == *req.egress);

    // Not in the policy: the proxy's own 403, counted as denied.
    const std::string refused =
        forkvm::test::proxy_client(proxy, "CONNECT other.test:443 HTTP/1.1\r\n\r\n", true);
    CHECK(refused.starts_with("HTTP/1.1 403 Forbidden\r\n"));

    // Allowed: a tunnel to the upstream, held open.
    forkvm::test::LoopbackClient client(proxy);
    client.send("CONNECT up.test:" + port + " HTTP/1.1\r\n\r\n");
    CHECK(client.read_until("\r\n\r\n") == "HTTP/1.1 200 Connection established\r\n\r\n");
    client.send("hello");

    // A fork cannot take the guest with a connection its clone's host would not have.
    const ServiceError busy = error_of([&] { (void)m.fork("alice", sb.info.id, {}); });
    CHECK(busy.code() == ErrorCode::conflict);
    CHECK(busy.message().find("1 proxied connection(s) still open") != std::string::npos);

    // A fork that waits goes ahead as soon as the connection ends: woken,
    // well before its 5 s wait would run out.
    std::vector<pool::Sandbox> clones;
    std::string fork_error;
    std::chrono::steady_clock::time_point forked;
    std::thread forker([&] {
        try {
            clones = m.fork("alice", sb.info.id, {});
        } catch (const std::exception& e) {
            fork_error = e.what();
        }
        forked = std::chrono::steady_clock::now();
    });
    std::this_thread::sleep_for(200ms);
    const auto closed = std::chrono::steady_clock::now();
    client.shutdown_write();
    CHECK(client.read_to_eof() == "upstream saw hello");
    forker.join();
    CHECK(fork_error == "");
    CHECK(forked - closed < 4s);
    REQUIRE(clones.size() == 1U);
    CHECK(clones[0].egress == *req.egress);
    CHECK(m.get("alice", clones[0].info.id).egress == *req.egress);

    const pool::EgressStats stats = m.stats().egress;
    CHECK(stats.allowed == 1U);
    CHECK(stats.denied == 1U);
    CHECK(stats.refused == 0U);
    CHECK(stats.bytes_to_upstream == 5U);
    CHECK(stats.bytes_to_guest == std::string("upstream saw hello").size());

    m.shutdown();
    warm.shutdown();
}
