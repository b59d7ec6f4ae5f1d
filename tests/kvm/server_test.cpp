// `forkvm serve` end to end: the real binary with real VMs, driven over real
// HTTP (docs/api.md, openapi/openapi.yaml). One server serves the cases of
// this file in order; the last cases kill it with SIGKILL and restart it
// from the cached golden snapshot. Every response is recorded and, at the
// end, validated against the OpenAPI file by openapi/validate-responses.mjs.

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/kvm/http_client.hpp"
#include "tests/kvm/server_process.hpp"
#include "tests/kvm/vm_fixture.hpp"
#include "tests/support/test_pki.hpp"

extern char** environ;

using namespace std::chrono_literals;
using forkvm::test::children_of;
using forkvm::test::HttpClient;
using forkvm::test::HttpRequest;
using forkvm::test::HttpResponse;
using forkvm::test::poll_until;
using forkvm::test::read_file;
using forkvm::test::ServerProcess;
using forkvm::test::status_field;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string kKeyA = "test-key-alpha-0123456789";
const std::string kKeyB = "test-key-bravo-0123456789";
const std::string kAdmin = "test-admin-key-0123456789";
constexpr std::size_t kMinWarm = 2;

struct Fixture {
    fs::path dir;
    fs::path log;
    fs::path record;
    std::unique_ptr<ServerProcess> server;
    std::unique_ptr<HttpClient> http;
    std::uint16_t port = 0;

    Fixture() {
        dir = fs::temp_directory_path() / ("forkvm-server-test-" + std::to_string(::getpid()));
        fs::remove_all(dir);
        fs::create_directories(dir / "data");
        // The log lives next to the test binary: readable live from outside
        // the emulated KVM host (whose /tmp is its own tmpfs).
        log = fs::path(FORKVM_TEST_BINARY).parent_path() / "server_test.log";
        fs::remove(log);
        record = dir / "exchanges.jsonl";
        const json config = {
            {"server",
             {{"listen", "127.0.0.1:0"},
              {"threads", 2},
              {"max_body_bytes", "64KiB"},
              {"max_upload_bytes", "2MiB"},
              {"read_timeout", "20s"},
              {"shutdown_deadline", "10s"}}},
            // No request-rate limit: on a KVM host the cycles below go faster than any default.
            {"auth", {{"api_keys", {kKeyA, kKeyB}}, {"admin_key", kAdmin}, {"rate_limit", 0}}},
            {"pool",
             {{"min_warm", kMinWarm}, {"max_warm", 4}, {"refill_concurrency", 2}, {"lease_wait", "120s"}}},
            {"sandbox",
             {{"max_sandboxes", 24},
              {"max_per_key", 16},
              {"default_ttl", "30m"},
              {"max_ttl", "2h"},
              {"max_fork_count", 4}}},
            {"data_dir", (dir / "data").string()},
        };
        std::ofstream(dir / "config.json") << config.dump(2);
        start();
    }
    ~Fixture() {
        server.reset();
        // The recorded exchanges outlive the run next to the log.
        std::error_code ec;
        fs::copy_file(record, fs::path(FORKVM_TEST_BINARY).parent_path() / "server_test_exchanges.jsonl",
                      fs::copy_options::overwrite_existing, ec);
        fs::remove_all(dir, ec);
    }

    void start(const std::string& config_name = "config.json") {
        server = std::make_unique<ServerProcess>(dir / config_name, log);
        port = server->wait_listening(std::chrono::seconds(600));
        http = std::make_unique<HttpClient>("127.0.0.1", port);
        http->record_to(record.string());
        const bool ready = poll_until([&] { return http->get("/readyz", "").status == 200; }, 600s);
        INFO("server log:\n" << server->log());
        REQUIRE(ready);
    }
};

Fixture& fixture() {
    static Fixture f;
    return f;
}

HttpClient& http() { return *fixture().http; }

// Creates a sandbox for `key` and returns its id.
std::string create_sandbox(const std::string& key, const json& body = json::object()) {
    auto r = http().post("/v1/sandboxes", key, body);
    INFO(r.body);
    REQUIRE(r.status == 201);
    return r.json().at("id").get<std::string>();
}

json exec(const std::string& id, const json& body, const std::string& key = kKeyA) {
    auto r = http().post("/v1/sandboxes/" + id + "/exec", key, body);
    INFO(r.body);
    REQUIRE(r.status == 200);
    return r.json();
}

// The VM processes of the server: its children (the zygote, warm clones and
// sandboxes are all children, forks included).
std::size_t vm_processes() { return children_of(fixture().server->pid()).size(); }

// Runs a shell command; returns its stdout.
std::string run_capture(const std::string& cmd) {
    FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    std::string out;
    char buf[4096];
    while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    ::pclose(p);
    return out;
}

std::size_t open_fds(pid_t pid) {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) ++n;
    return n;
}

}  // namespace

TEST_CASE("server: health, readiness, metrics auth and the OpenAPI document") {
    auto& h = http();
    auto health = h.get("/healthz", "");
    CHECK(health.status == 200);
    CHECK(health.json()["status"] == "ok");
    CHECK_FALSE(health.header("x-request-id").empty());
    auto ready = h.get("/readyz", "");
    CHECK(ready.status == 200);
    CHECK(ready.json()["warm"].get<int>() >= 1);

    CHECK(h.get("/metrics", "").status == 401);
    CHECK(h.get("/metrics", kKeyA).status == 401);
    auto metrics = h.get("/metrics", kAdmin);
    CHECK(metrics.status == 200);
    CHECK(metrics.body.find("forkvm_pool_warm") != std::string::npos);
    CHECK(metrics.body.find("forkvm_live_vms") != std::string::npos);

    auto spec = h.get("/openapi.yaml", "");
    CHECK(spec.status == 200);
    CHECK(spec.body.find("openapi: 3.1") != std::string::npos);
}

TEST_CASE("server: the startup log shows the golden boot and the pool warming") {
    const std::string log = fixture().server->log();
    CHECK(log.find("golden VM booting") != std::string::npos);
    CHECK(log.find("golden snapshot written") != std::string::npos);
    CHECK(log.find("pool warming") != std::string::npos);
}

TEST_CASE("server: a sandbox is created, listed, read, kept alive and deleted") {
    auto& h = http();
    auto created = h.post("/v1/sandboxes", kKeyA, {{"labels", {{"team", "red"}}}, {"ttl_ms", 600000}});
    REQUIRE(created.status == 201);
    const json sb = created.json();
    const std::string id = sb["id"];
    CHECK(sb["state"] == "running");
    CHECK(sb["labels"]["team"] == "red");
    CHECK(created.header("location") == "/v1/sandboxes/" + id);

    auto got = h.get("/v1/sandboxes/" + id, kKeyA);
    CHECK(got.status == 200);
    CHECK(got.json()["id"] == id);

    auto listed = h.get("/v1/sandboxes?label=team=red", kKeyA);
    REQUIRE(listed.status == 200);
    bool found = false;
    const json listed_body = listed.json();  // a named value: range-for over a temporary's member dangles
    for (const auto& s : listed_body["sandboxes"]) found = found || s["id"] == id;
    CHECK(found);
    auto none = h.get("/v1/sandboxes?label=team=blue", kKeyA);
    CHECK(none.json()["sandboxes"].empty());

    auto kept = h.post("/v1/sandboxes/" + id + "/keepalive", kKeyA, {{"ttl_ms", 3600000}});
    CHECK(kept.status == 200);
    CHECK(kept.json()["expires_at"].get<std::string>() >= sb["expires_at"].get<std::string>());

    auto console = h.get("/v1/sandboxes/" + id + "/console", kKeyA);
    CHECK(console.status == 200);
    CHECK(console.json()["console"].is_string());

    CHECK(h.del("/v1/sandboxes/" + id, kKeyA).status == 204);
    auto gone = h.get("/v1/sandboxes/" + id, kKeyA);
    CHECK(gone.status == 404);
}

TEST_CASE("server: keys are required and each key sees only its own sandboxes") {
    auto& h = http();
    CHECK(h.get("/v1/sandboxes", "").status == 401);
    auto wrong = h.get("/v1/sandboxes", "not-a-key");
    CHECK(wrong.status == 401);
    CHECK(wrong.error_code() == "unauthorized");
    CHECK_FALSE(wrong.header("www-authenticate").empty());

    const std::string id = create_sandbox(kKeyA);
    auto other = h.get("/v1/sandboxes/" + id, kKeyB);
    CHECK(other.status == 404);
    CHECK(other.error_code() == "not_found");
    CHECK(h.post("/v1/sandboxes/" + id + "/exec", kKeyB, {{"cmd", {"true"}}}).status == 404);
    CHECK(h.del("/v1/sandboxes/" + id, kKeyB).status == 404);
    const json b_list = h.get("/v1/sandboxes", kKeyB).json();
    for (const auto& s : b_list["sandboxes"]) CHECK(s["id"] != id);
    CHECK(h.del("/v1/sandboxes/" + id, kKeyA).status == 204);
}

TEST_CASE("server: bad input gets a clear error with the right status") {
    auto& h = http();
    const std::string id = create_sandbox(kKeyA);
    const std::string exec_path = "/v1/sandboxes/" + id + "/exec";

    auto malformed = h.post_raw(exec_path, kKeyA, "{\"cmd\": [\"true\"");
    CHECK(malformed.status == 400);
    CHECK(malformed.error_code() == "invalid_argument");

    auto wrong_type = h.post(exec_path, kKeyA, {{"cmd", "true"}});
    CHECK(wrong_type.status == 400);
    CHECK(wrong_type.error_field() == "cmd");

    auto both = h.post(exec_path, kKeyA, {{"cmd", {"true"}}, {"shell", "true"}});
    CHECK(both.status == 400);
    auto neither = h.post(exec_path, kKeyA, json::object());
    CHECK(neither.status == 400);
    auto unknown_field = h.post(exec_path, kKeyA, {{"cmd", {"true"}}, {"colour", "red"}});
    CHECK(unknown_field.status == 400);
    CHECK(unknown_field.error_field() == "colour");
    auto bad_ttl = h.post("/v1/sandboxes", kKeyA, {{"ttl_ms", -5}});
    CHECK(bad_ttl.status == 400);
    CHECK(bad_ttl.error_field() == "ttl_ms");

    auto unknown = h.get("/v1/sandboxes/sb-doesnotexist", kKeyA);
    CHECK(unknown.status == 404);
    CHECK(unknown.error_code() == "not_found");
    // Unknown routes are not in the OpenAPI file: ask without recording.
    HttpClient unrecorded("127.0.0.1", fixture().port);
    CHECK(unrecorded.get("/v1/nothing-here", kKeyA).status == 404);

    auto huge = h.post_raw(exec_path, kKeyA, "{\"shell\": \"" + std::string(100 * 1024, 'x') + "\"}");
    CHECK(huge.status == 413);
    CHECK(huge.error_code() == "payload_too_large");
    auto huge_upload =
        h.put("/v1/sandboxes/" + id + "/files?path=/tmp/big", kKeyA, std::string(3 << 20, 'y'));
    CHECK(huge_upload.status == 413);
    auto relative = h.put("/v1/sandboxes/" + id + "/files?path=tmp/x", kKeyA, "x");
    CHECK(relative.status == 400);
    CHECK(relative.error_field() == "path");
    auto big_fork = h.post("/v1/sandboxes/" + id + "/fork", kKeyA, {{"count", 1000}});
    CHECK(big_fork.status == 400);
    CHECK(big_fork.error_field() == "count");

    // The server is still fine after all that.
    CHECK(exec(id, {{"cmd", {"echo", "ok"}}})["stdout"] == "ok\n");
    CHECK(h.del("/v1/sandboxes/" + id, kKeyA).status == 204);
}

TEST_CASE("server: exec runs argv and shell strings with env, cwd, stdin and timeouts") {
    const std::string id = create_sandbox(kKeyA, {{"env", {{"GREETING", "hello"}}}});
    auto r = exec(id, {{"cmd", {"sh", "-c", "echo $GREETING $EXTRA; pwd; cat"}},
                       {"env", {{"EXTRA", "world"}}},
                       {"cwd", "/tmp"},
                       {"stdin", "from stdin"}});
    CHECK(r["exit_code"] == 0);
    CHECK(r["stdout"] == "hello world\n/tmp\nfrom stdin");
    CHECK(r["stdout_encoding"] == "utf-8");

    auto shell = exec(id, {{"shell", "echo err >&2; exit 3"}});
    CHECK(shell["exit_code"] == 3);
    CHECK(shell["stderr"] == "err\n");

    auto binary = exec(id, {{"shell", "printf '\\377\\376\\000x'"}});
    CHECK(binary["stdout_encoding"] == "base64");
    CHECK(binary["stdout"] == "//4AeA==");

    auto slow = exec(id, {{"cmd", {"sleep", "30"}}, {"timeout_ms", 500}});
    CHECK(slow["timed_out"] == true);

    auto capped = exec(id, {{"shell", "head -c 100000 /dev/zero | tr '\\0' a"}, {"max_output_bytes", 1000}});
    CHECK(capped["stdout"].get<std::string>().size() == 1000);
    CHECK(capped["stdout_truncated"] == true);
    CHECK(http().del("/v1/sandboxes/" + id, kKeyA).status == 204);
}

TEST_CASE("server: streaming exec delivers output live and a disconnect kills the command") {
    const std::string id = create_sandbox(kKeyA);
    HttpRequest req{"POST",
                    "/v1/sandboxes/" + id + "/exec?stream=true",
                    {{"Authorization", "Bearer " + kKeyA}, {"Content-Type", "application/json"}},
                    json{{"shell", "echo one; sleep 1; echo two"}}.dump()};
    std::string all;
    auto head = http().stream(req, [&](const std::string& chunk) {
        all += chunk;
        return true;
    });
    CHECK(head.status == 200);
    CHECK(head.header("content-type").rfind("application/x-ndjson", 0) == 0);
    std::vector<json> events;
    std::istringstream lines(all);
    for (std::string line; std::getline(lines, line);) events.push_back(json::parse(line));
    REQUIRE(events.size() >= 3);
    CHECK(events.front()["type"] == "started");
    CHECK(events.back()["type"] == "exit");
    CHECK(events.back()["exit_code"] == 0);
    std::string out;
    for (const auto& e : events)
        if (e["type"] == "stdout") out += e["data"].get<std::string>();
    CHECK(out == "one\ntwo\n");

    // A command that would run for minutes: the client reads its first line
    // and hangs up; the server must kill it (the marker process disappears).
    HttpRequest forever{"POST",
                        "/v1/sandboxes/" + id + "/exec?stream=true",
                        {{"Authorization", "Bearer " + kKeyA}, {"Content-Type", "application/json"}},
                        json{{"shell", "echo started; exec sleep 600"}}.dump()};
    http().stream(forever,
                  [&](const std::string& chunk) { return chunk.find("started") == std::string::npos; });
    const bool killed = poll_until(
        [&] {
            auto ps = exec(id, {{"shell", "ps | grep -c '[s]leep 600' || true"}});
            return ps["stdout"] == "0\n";
        },
        120s);
    CHECK(killed);
    CHECK(http().del("/v1/sandboxes/" + id, kKeyA).status == 204);
}

TEST_CASE("server: files are uploaded, downloaded, listed, moved and removed") {
    auto& h = http();
    const std::string id = create_sandbox(kKeyA);
    const std::string base = "/v1/sandboxes/" + id + "/files";
    std::string data(200 * 1024, '\0');
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>((i * 131 + i / 7) & 0xff);

    auto up = h.put(base + "?path=/tmp/d/blob.bin&parents=true", kKeyA, data);
    REQUIRE(up.status == 201);
    CHECK(up.json()["size"] == data.size());
    auto down = h.get(base + "?path=/tmp/d/blob.bin", kKeyA);
    CHECK(down.status == 200);
    CHECK(down.body == data);

    auto st = h.get(base + "/stat?path=/tmp/d/blob.bin", kKeyA);
    CHECK(st.status == 200);
    CHECK(st.json()["type"] == "file");
    CHECK(st.json()["size"] == data.size());

    CHECK(h.post(base + "/mkdir", kKeyA, {{"path", "/tmp/d/sub"}}).status == 201);
    CHECK(h.post(base + "/mkdir", kKeyA, {{"path", "/tmp/d/sub"}}).status == 409);
    CHECK(
        h.post(base + "/move", kKeyA, {{"from", "/tmp/d/blob.bin"}, {"to", "/tmp/d/sub/moved.bin"}}).status ==
        200);
    auto ls = h.get(base + "/list?path=/tmp/d/sub", kKeyA);
    REQUIRE(ls.status == 200);
    REQUIRE(ls.json()["entries"].size() == 1);
    CHECK(ls.json()["entries"][0]["name"] == "moved.bin");

    auto missing = h.get(base + "?path=/tmp/d/blob.bin", kKeyA);
    CHECK(missing.status == 404);
    CHECK(missing.error_code() == "not_found");
    CHECK(h.del(base + "?path=/tmp/d&recursive=true", kKeyA).status == 204);
    CHECK(h.get(base + "/stat?path=/tmp/d", kKeyA).status == 404);
    CHECK(h.del("/v1/sandboxes/" + id, kKeyA).status == 204);
}

TEST_CASE("server: a fork starts from the source's current state and is independent") {
    auto& h = http();
    const std::string id = create_sandbox(kKeyA, {{"labels", {{"role", "source"}}}});
    REQUIRE(h.put("/v1/sandboxes/" + id + "/files?path=/tmp/state", kKeyA, "before fork").status == 201);
    auto forked = h.post("/v1/sandboxes/" + id + "/fork", kKeyA, {{"count", 2}});
    INFO(forked.body);
    REQUIRE(forked.status == 201);
    const auto clones = forked.json()["sandboxes"];
    REQUIRE(clones.size() == 2);
    std::set<std::string> ids{id};
    for (const auto& c : clones) {
        const std::string cid = c["id"];
        ids.insert(cid);
        CHECK(c["labels"]["role"] == "source");
        CHECK(exec(cid, {{"cmd", {"cat", "/tmp/state"}}})["stdout"] == "before fork");
        REQUIRE(h.put("/v1/sandboxes/" + cid + "/files?path=/tmp/state", kKeyA, "clone " + cid).status ==
                201);
        CHECK(h.get("/v1/sandboxes/" + cid, kKeyB).status == 404);
    }
    CHECK(ids.size() == 3);
    CHECK(exec(id, {{"cmd", {"cat", "/tmp/state"}}})["stdout"] == "before fork");
    for (const auto& s : ids) CHECK(h.del("/v1/sandboxes/" + s, kKeyA).status == 204);
}

TEST_CASE("server: a sandbox past its TTL is destroyed and answers expired") {
    auto& h = http();
    const std::string id = create_sandbox(kKeyA, {{"ttl_ms", 2000}});
    const bool expired =
        poll_until([&] { return h.get("/v1/sandboxes/" + id, kKeyA).error_code() == "expired"; }, 120s);
    CHECK(expired);
    auto r = h.get("/v1/sandboxes/" + id, kKeyA);
    CHECK(r.status == 404);
    CHECK(r.error_code() == "expired");
    // Its VM is gone: the pool has nothing leased any more.
    CHECK(poll_until([&] { return http().get("/v1/pools", kKeyA).json()["pools"][0]["leased"] == 0; }, 120s));
}

TEST_CASE("server: lease, exec and delete cycles at concurrency 8 finish without errors or leaks") {
    const char* env_cycles = std::getenv("FORKVM_TEST_SERVER_CYCLES");
    const int cycles = env_cycles != nullptr ? std::atoi(env_cycles) : 100;
    const pid_t server = fixture().server->pid();
    // Settle first: the pool is back at min_warm and nothing else runs.
    REQUIRE(poll_until([&] { return http().get("/readyz", "").status == 200; }, 300s));
    const std::size_t fds_before = open_fds(server);

    std::atomic<int> next{0};
    std::atomic<int> errors{0};
    std::vector<std::string> failures;
    std::mutex failures_mutex;
    auto worker = [&] {
        HttpClient client("127.0.0.1", fixture().port);
        for (int i = next++; i < cycles; i = next++) {
            try {
                auto c = client.post("/v1/sandboxes", kKeyA, json::object());
                if (c.status != 201)
                    throw std::runtime_error("create " + std::to_string(c.status) + " " + c.body);
                const std::string id = c.json()["id"];
                auto e = client.post("/v1/sandboxes/" + id + "/exec", kKeyA,
                                     {{"cmd", {"echo", "cycle-" + std::to_string(i)}}});
                if (e.status != 200 || e.json()["stdout"] != "cycle-" + std::to_string(i) + "\n") {
                    throw std::runtime_error("exec " + std::to_string(e.status) + " " + e.body);
                }
                auto d = client.del("/v1/sandboxes/" + id, kKeyA);
                if (d.status != 204) throw std::runtime_error("delete " + std::to_string(d.status));
            } catch (const std::exception& ex) {
                ++errors;
                const std::lock_guard lock(failures_mutex);
                failures.emplace_back(ex.what());
            }
        }
    };
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
    for (const auto& f : failures) MESSAGE(f);
    CHECK(errors == 0);

    // Nothing is left beyond the warm pool: no sandbox, no extra VM process,
    // no extra fd (the pool refills to min_warm; allow it to settle).
    CHECK(http().get("/v1/sandboxes", kKeyA).json()["sandboxes"].empty());
    const bool settled = poll_until(
        [&] {
            auto pools = http().get("/v1/pools", kKeyA).json()["pools"][0];
            return pools["warm"] == kMinWarm && pools["leased"] == 0 && pools["forking"] == 0 &&
                   vm_processes() == kMinWarm + 1;  // + the zygote
        },
        300s);
    CHECK(settled);
    CHECK(open_fds(server) <= fds_before + 4);  // a few kept-alive client sockets may linger
    // No file is left behind either: the data folder holds the one golden
    // snapshot, nothing else.
    std::vector<std::string> data_entries;
    for (const auto& e : fs::recursive_directory_iterator(fixture().dir / "data")) {
        data_entries.push_back(fs::relative(e.path(), fixture().dir / "data").string());
    }
    INFO("data folder: " << nlohmann::json(data_entries).dump());
    // golden/, golden/golden-<key>/ and its 3 files; snapshots/, templates/ and spool/ (empty)
    CHECK(data_entries.size() == 8);
    for (const auto& name : data_entries) CHECK(name.find(".tmp-") == std::string::npos);
}

// The template pool's numbers in GET /v1/pools (null if it is not listed).
json template_pool(const std::string& name) {
    const json pools = http().get("/v1/pools", kKeyA).json();  // named: the loop below must not outlive it
    for (const auto& pool : pools["pools"]) {
        if (pool["template"] == name) return pool;
    }
    return nullptr;
}

std::string g_snapshot_id;  // the "py" template's snapshot, checked again after the restart

TEST_CASE(
    "server: a template made from a sandbox starts sandboxes with its files; its pool refills and drains") {
    // A sandbox where the user "installed a runtime".
    const std::string source = create_sandbox(kKeyA);
    exec(source, {{"shell", "mkdir -p /tmp/rt && echo numpy-ready > /tmp/rt/marker"}});

    auto r = http().post("/v1/sandboxes/" + source + "/snapshot", kKeyA, {{"labels", {{"runtime", "py"}}}});
    INFO(r.body);
    REQUIRE(r.status == 201);
    const json snap = r.json();
    g_snapshot_id = snap["id"];
    CHECK(snap["source_sandbox"] == source);
    CHECK(snap["memory_bytes"].get<std::uint64_t>() > 0);
    CHECK(snap["disk_bytes"].get<std::uint64_t>() > 0);
    CHECK(http().get("/v1/snapshots/" + g_snapshot_id, kKeyB).status == 404);
    CHECK(http().get("/v1/snapshots", kKeyA).json()["snapshots"].size() == 1);
    // The source runs on after its snapshot, and what it does now is not in the snapshot.
    exec(source, {{"shell", "echo changed-later > /tmp/rt/marker"}});

    r = http().post("/v1/templates", kKeyA,
                    {{"name", "py"}, {"snapshot_id", g_snapshot_id}, {"min_warm", 1}, {"max_warm", 2}});
    INFO(r.body);
    REQUIRE(r.status == 201);
    CHECK(r.json()["state"] == "ready");
    CHECK(http().get("/v1/templates/py", kKeyB).status == 404);
    CHECK(http().del("/v1/snapshots/" + g_snapshot_id, kKeyA).status == 409);  // the template uses it

    // Its pool warms...
    REQUIRE(poll_until([] { return template_pool("py")["warm"] == 1; }, 300s));
    // ...a sandbox from it sees the file at once, with its own identity...
    const std::string from_template = create_sandbox(kKeyA, {{"template", "py"}});
    const json got = http().get("/v1/sandboxes/" + from_template, kKeyA).json();
    CHECK(got["template"] == "py");
    CHECK(exec(from_template, {{"shell", "cat /tmp/rt/marker; hostname"}})["stdout"] ==
          "numpy-ready\n" + from_template + "\n");
    // ...and the pool refills behind it.
    CHECK(poll_until(
        [] {
            const json pool = template_pool("py");
            return pool["warm"] == 1 && pool["forks"].get<int>() >= 2;
        },
        300s));
    // Forks of a template sandbox keep its template.
    r = http().post("/v1/sandboxes/" + from_template + "/fork", kKeyA, json::object());
    REQUIRE(r.status == 201);
    const std::string clone = r.json()["sandboxes"][0]["id"];
    CHECK(r.json()["sandboxes"][0]["template"] == "py");
    CHECK(exec(clone, {{"cmd", {"cat", "/tmp/rt/marker"}}})["stdout"] == "numpy-ready\n");

    // A second template from the same snapshot, deleted while one of its
    // sandboxes lives: its pool drains (warm VMs and zygote gone), the sandbox runs on.
    r = http().post("/v1/templates", kKeyA,
                    {{"name", "py-tmp"}, {"snapshot_id", g_snapshot_id}, {"min_warm", 2}});
    INFO(r.body);
    REQUIRE(r.status == 201);
    REQUIRE(poll_until([] { return template_pool("py-tmp")["warm"] == 2; }, 300s));
    const std::string survivor = create_sandbox(kKeyA, {{"template", "py-tmp"}});
    REQUIRE(poll_until([] { return template_pool("py-tmp")["warm"] == 2; }, 300s));
    const std::size_t before = vm_processes();
    CHECK(http().del("/v1/templates/py-tmp", kKeyA).status == 204);
    CHECK(http().get("/v1/templates/py-tmp", kKeyA).status == 404);
    CHECK(template_pool("py-tmp").is_null());
    CHECK(poll_until([&] { return vm_processes() == before - 3; }, 120s));  // 2 warm + the zygote
    CHECK(exec(survivor, {{"cmd", {"cat", "/tmp/rt/marker"}}})["stdout"] == "numpy-ready\n");
    r = http().post("/v1/sandboxes", kKeyA, {{"template", "py-tmp"}});
    CHECK(r.status == 404);

    // Resizing "py" keeps it working; the template and snapshot stay for the restart case.
    r = http().patch("/v1/templates/py", kKeyA, {{"min_warm", 1}, {"max_warm", 3}});
    INFO(r.body);
    CHECK(r.status == 200);
    CHECK(r.json()["max_warm"] == 3);
    for (const auto& id : {source, from_template, clone, survivor}) {
        CHECK(http().del("/v1/sandboxes/" + id, kKeyA).status == 204);
    }
}

// Entries of a folder (none if it does not exist).
std::vector<std::string> entries_of(const fs::path& dir) {
    std::vector<std::string> out;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        out.push_back(it->path().filename().string());
    }
    return out;
}

TEST_CASE("server: a snapshot exported from one server and imported into another makes a working template") {
    auto& f = fixture();
    REQUIRE_FALSE(g_snapshot_id.empty());
    auto r = http().get("/v1/snapshots/" + g_snapshot_id + "/export", kKeyA);
    REQUIRE(r.status == 200);
    const std::string stream = r.body;
    MESSAGE("export stream: " << stream.size() << " bytes");
    CHECK(stream.size() > 1000);
    CHECK(http().get("/v1/snapshots/" + g_snapshot_id + "/export", kKeyB).status == 404);

    // A second server with its own data folder (sharing the golden cache, so
    // it does not boot the golden VM again) and its own keys.
    const fs::path dir2 = f.dir / "second";
    fs::create_directories(dir2 / "data");
    fs::create_directory_symlink(f.dir / "data" / "golden", dir2 / "data" / "golden");
    json config = json::parse(read_file(f.dir / "config.json"));
    config["data_dir"] = (dir2 / "data").string();
    config["pool"]["min_warm"] = 1;
    config["auth"]["api_keys"] = {kKeyB};
    std::ofstream(dir2 / "config.json") << config.dump(2);
    ServerProcess second(dir2 / "config.json",
                         fs::path(FORKVM_TEST_BINARY).parent_path() / "server_test_second.log");
    const std::uint16_t port2 = second.wait_listening(600s);
    HttpClient http2("127.0.0.1", port2);
    http2.record_to(f.record.string());
    REQUIRE(poll_until([&] { return http2.get("/readyz", "").status == 200; }, 600s));

    // Damaged uploads are refused and leave nothing: cut short, one byte flipped, not an export.
    const auto snapshots2 = dir2 / "data" / "snapshots";
    const auto spool2 = dir2 / "data" / "spool";
    std::string flipped = stream;
    flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x01);
    for (const std::string& bad : {stream.substr(0, stream.size() / 2), flipped, std::string("hello")}) {
        r = http2.post_raw("/v1/snapshots/import", kKeyB, bad, "application/octet-stream");
        INFO(r.body);
        CHECK(r.status == 400);
        CHECK(r.error_field() == "body");
        CHECK(entries_of(snapshots2).empty());
        CHECK(entries_of(spool2).empty());
    }
    CHECK(http2.get("/v1/snapshots", kKeyB).json()["snapshots"].empty());

    // The intact stream imports, and a template from it serves the file.
    r = http2.post_raw("/v1/snapshots/import", kKeyB, stream, "application/octet-stream");
    INFO(r.body);
    REQUIRE(r.status == 201);
    const std::string imported = r.json()["id"];
    CHECK(imported != g_snapshot_id);
    CHECK(r.json()["labels"]["runtime"] == "py");
    CHECK(r.json()["source_sandbox"].is_null());
    CHECK(entries_of(spool2).empty());
    r = http2.post("/v1/templates", kKeyB,
                   {{"name", "py-imported"}, {"snapshot_id", imported}, {"min_warm", 1}});
    INFO(r.body);
    REQUIRE(r.status == 201);
    r = http2.post("/v1/sandboxes", kKeyB, {{"template", "py-imported"}});
    INFO(r.body);
    REQUIRE(r.status == 201);
    const std::string id = r.json()["id"];
    r = http2.post("/v1/sandboxes/" + id + "/exec", kKeyB, {{"cmd", {"cat", "/tmp/rt/marker"}}});
    CHECK(r.json()["stdout"] == "numpy-ready\n");

    const std::vector<pid_t> vms = children_of(second.pid());
    second.signal(SIGTERM);
    REQUIRE(poll_until([&] { return second.exited(); }, 120s));
    CHECK(WEXITSTATUS(second.status()) == 0);
    CHECK(forkvm::test::all_reaped(vms, 30s));
}

// Lines of /proc/<pid>/cgroup joined: "0::/forkvm/vm-123" under cgroup v2.
std::string cgroup_of(pid_t pid) { return read_file("/proc/" + std::to_string(pid) + "/cgroup"); }

TEST_CASE("server jail: as server.user it keeps only what jails VM processes, and every operation works") {
    auto& f = fixture();
    constexpr uid_t kNobody = 65534;
    const std::string nobody = std::to_string(kNobody);
    // A third server, as "nobody", sharing the golden cache by hard links
    // (their owner becomes nobody; the root server reads them all the same).
    // The binary and the initramfs are copied where nobody can reach them:
    // a checkout may live under a folder only root can enter.
    const fs::path dir3 = f.dir / "as-user";
    fs::create_directories(dir3 / "bin");
    fs::create_directories(dir3 / "data");
    fs::copy(f.dir / "data" / "golden", dir3 / "data" / "golden",
             fs::copy_options::recursive | fs::copy_options::create_hard_links);
    const fs::path binary = dir3 / "bin" / "forkvm";
    fs::copy_file(FORKVM_TEST_BINARY, binary);
    fs::copy_file(FORKVM_TEST_INITRD, dir3 / "bin" / "rootfs.cpio.gz");
    fs::permissions(dir3 / "bin" / "rootfs.cpio.gz",
                    fs::perms::owner_read | fs::perms::group_read | fs::perms::others_read);
    json config = json::parse(read_file(f.dir / "config.json"));
    config["data_dir"] = (dir3 / "data").string();
    config["server"]["user"] = "nobody";
    config["vm"]["initrd"] = (dir3 / "bin" / "rootfs.cpio.gz").string();
    config["pool"]["min_warm"] = 1;
    config["auth"]["api_keys"] = {kKeyB};
    std::ofstream(dir3 / "config.json") << config.dump(2);
    ServerProcess server(dir3 / "config.json",
                         fs::path(FORKVM_TEST_BINARY).parent_path() / "server_test_user.log", binary);
    const std::uint16_t port3 = server.wait_listening(600s);
    HttpClient http3("127.0.0.1", port3);
    http3.record_to(f.record.string());
    REQUIRE(poll_until([&] { return http3.get("/readyz", "").status == 200; }, 600s));
    INFO("server log:\n" << server.log());
    CHECK(server.log().find("running as nobody (uid 65534, gid 65534), keeping CAP_CHOWN, CAP_KILL, "
                            "CAP_SETGID, CAP_SETUID, CAP_SETPCAP, CAP_SYS_ADMIN") != std::string::npos);
    CHECK(server.log().find("cached golden snapshot reused") != std::string::npos);

    // The server: nobody, with CAP_CHOWN, CAP_KILL and the four the jail
    // needs (ambient only those four, for its VM processes); nothing else,
    // bounding set included.
    const pid_t spid = server.pid();
    CHECK(status_field(spid, "Uid") == nobody + "\t" + nobody + "\t" + nobody + "\t" + nobody);
    CHECK(status_field(spid, "Gid") == nobody + "\t" + nobody + "\t" + nobody + "\t" + nobody);
    CHECK(status_field(spid, "CapEff") == "00000000002001e1");
    CHECK(status_field(spid, "CapPrm") == "00000000002001e1");
    CHECK(status_field(spid, "CapBnd") == "00000000002001e1");
    CHECK(status_field(spid, "CapAmb") == "00000000002001c0");
    const bool v2 = cgroup_of(spid).starts_with("0::");
    if (v2) CHECK(cgroup_of(spid).find("/forkvm/forkvm-server\n") != std::string::npos);

    // Sandboxes work: create, exec, fork, snapshot, a template restored from
    // the snapshot (the VM process reads it as nobody before its jail).
    auto r = http3.post("/v1/sandboxes", kKeyB, json::object());
    INFO(r.body);
    REQUIRE(r.status == 201);
    const std::string id = r.json()["id"];
    r = http3.post("/v1/sandboxes/" + id + "/exec", kKeyB, {{"shell", "echo as-user > /tmp/m; cat /tmp/m"}});
    REQUIRE(r.status == 200);
    CHECK(r.json()["stdout"] == "as-user\n");
    r = http3.post("/v1/sandboxes/" + id + "/fork", kKeyB, json::object());
    INFO(r.body);
    REQUIRE(r.status == 201);
    const std::string clone = r.json()["sandboxes"][0]["id"];
    r = http3.post("/v1/sandboxes/" + clone + "/exec", kKeyB, {{"cmd", {"cat", "/tmp/m"}}});
    CHECK(r.json()["stdout"] == "as-user\n");
    r = http3.post("/v1/sandboxes/" + id + "/snapshot", kKeyB, json::object());
    INFO(r.body);
    REQUIRE(r.status == 201);
    const std::string snap = r.json()["id"];
    r = http3.post("/v1/templates", kKeyB, {{"name", "as-user"}, {"snapshot_id", snap}, {"min_warm", 1}});
    INFO(r.body);
    REQUIRE(r.status == 201);
    r = http3.post("/v1/sandboxes", kKeyB, {{"template", "as-user"}});
    INFO(r.body);
    REQUIRE(r.status == 201);
    const std::string from_template = r.json()["id"];
    r = http3.post("/v1/sandboxes/" + from_template + "/exec", kKeyB, {{"cmd", {"cat", "/tmp/m"}}});
    CHECK(r.json()["stdout"] == "as-user\n");

    // Its VM processes: jailed with uids of their own and no capabilities,
    // each in its own cgroup inside the delegated subtree.
    const std::vector<pid_t> vms = children_of(spid);
    CHECK(vms.size() >= 5);  // 2 zygotes, 3 sandboxes, warm spares
    for (pid_t vm : vms) {
        INFO("VM process " << vm);
        const std::string uid = status_field(vm, "Uid");
        CHECK(uid.substr(0, uid.find('\t')) != nobody);
        CHECK(std::stoul(uid.substr(0, uid.find('\t'))) >= 1000000000UL);
        CHECK(status_field(vm, "CapEff") == "0000000000000000");
        CHECK(status_field(vm, "CapPrm") == "0000000000000000");
        CHECK(status_field(vm, "CapAmb") == "0000000000000000");
        CHECK(status_field(vm, "CapBnd") == "0000000000000000");
        if (v2) CHECK(cgroup_of(vm).find("/forkvm/vm-" + std::to_string(vm) + "\n") != std::string::npos);
    }
    // What it keeps on disk is nobody's.
    for (const auto& e : fs::recursive_directory_iterator(dir3 / "data")) {
        struct stat st {};
        REQUIRE(::lstat(e.path().c_str(), &st) == 0);
        INFO(e.path());
        CHECK(st.st_uid == kNobody);
    }

    server.signal(SIGTERM);
    REQUIRE(poll_until([&] { return server.exited(); }, 120s));
    CHECK(WIFEXITED(server.status()));
    CHECK(WEXITSTATUS(server.status()) == 0);
    CHECK(forkvm::test::all_reaped(vms, 30s));
}

TEST_CASE("server: every recorded response matches the OpenAPI document") {
    const fs::path root = fs::path(FORKVM_TEST_SOURCE_DIR);
    const fs::path validator = root / "openapi" / "validate-responses.mjs";
    REQUIRE(fs::exists(validator));
    if (!fs::exists(root / "openapi" / "node_modules")) {
        FAIL(
            "openapi/node_modules is missing: run openapi/check.sh (scripts/test does) before the kvm tests");
    }
    const std::string cmd = "node " + validator.string() + " --spec " +
                            (root / "openapi" / "openapi.yaml").string() + " " + fixture().record.string() +
                            " 2>&1";
    FILE* p = ::popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    std::string out;
    char buf[4096];
    while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
    const int status = ::pclose(p);
    INFO(out);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("server: kill -9 leaves no VM process, and a restart reuses the cached golden snapshot") {
    auto& f = fixture();
    // VM processes are the server's children; after its death they must go
    // too (they would be reparented to us, a subreaper, if they lingered).
    REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
    const std::vector<pid_t> vms = children_of(f.server->pid());
    REQUIRE(vms.size() >= kMinWarm + 1);
    f.server->signal(SIGKILL);
    REQUIRE(poll_until([&] { return f.server->exited(); }, 60s));
    CHECK(forkvm::test::all_reaped(vms, 60s));
    ::prctl(PR_SET_CHILD_SUBREAPER, 0);

    f.start();
    const std::string restart_log = f.server->log();
    CHECK(restart_log.find("cached golden snapshot reused") != std::string::npos);
    CHECK(restart_log.find("golden VM booting") == std::string::npos);
    const std::string id = create_sandbox(kKeyA);
    CHECK(exec(id, {{"cmd", {"echo", "after restart"}}})["stdout"] == "after restart\n");

    // Snapshots and templates survive the restart and work at once.
    const auto snapshots = http().get("/v1/snapshots", kKeyA).json()["snapshots"];
    REQUIRE(snapshots.size() == 1);
    CHECK(snapshots[0]["id"] == g_snapshot_id);
    CHECK(snapshots[0]["templates"] == json::array({"py"}));
    const json tpl = http().get("/v1/templates/py", kKeyA).json();
    CHECK(tpl["state"] == "ready");
    CHECK(tpl["max_warm"] == 3);
    const std::string from_template = create_sandbox(kKeyA, {{"template", "py"}});
    CHECK(exec(from_template, {{"cmd", {"cat", "/tmp/rt/marker"}}})["stdout"] == "numpy-ready\n");

    // SIGTERM: a graceful stop that destroys every VM and exits 0.
    const std::vector<pid_t> vms2 = children_of(f.server->pid());
    f.server->signal(SIGTERM);
    REQUIRE(poll_until([&] { return f.server->exited(); }, 120s));
    CHECK(WIFEXITED(f.server->status()));
    CHECK(WEXITSTATUS(f.server->status()) == 0);
    CHECK(forkvm::test::all_reaped(vms2, 30s));
}

TEST_CASE("server: with a certificate it serves HTTPS only, plain HTTP to it fails cleanly") {
    auto& f = fixture();
    forkvm::test::TestPki pki;
    const auto pem = pki.issue({"localhost"}, {"127.0.0.1"});
    std::ofstream(f.dir / "ca.pem") << pki.ca_pem();
    std::ofstream(f.dir / "cert.pem") << pem.cert;
    std::ofstream(f.dir / "key.pem") << pem.key;
    json config = json::parse(read_file(f.dir / "config.json"));
    config["server"]["tls_cert"] = (f.dir / "cert.pem").string();
    config["server"]["tls_key"] = (f.dir / "key.pem").string();
    std::ofstream(f.dir / "config_tls.json") << config.dump(2);

    f.server = std::make_unique<ServerProcess>(f.dir / "config_tls.json", f.log);
    const std::uint16_t port = f.server->wait_listening(600s);
    CHECK(f.server->log().find("listening on https://") != std::string::npos);
    const std::string p = std::to_string(port);
    const std::string https = "curl -sS --max-time 60 --cacert " + (f.dir / "ca.pem").string() +
                              " --resolve localhost:" + p +
                              ":127.0.0.1 -w '\\n%{http_code}' https://localhost:" + p;
    REQUIRE(poll_until([&] { return run_capture(https + "/readyz").ends_with("\n200"); }, 600s));
    const std::string listed = run_capture(https + "/v1/templates -H 'Authorization: Bearer " + kKeyA + "'");
    INFO(listed);
    CHECK(listed.ends_with("\n200"));
    CHECK(listed.find("\"name\":\"py\"") != std::string::npos);

    // Plain HTTP to the HTTPS port: a plain-text 400 naming the problem, then close.
    const std::string plain =
        run_capture("curl -sS --max-time 60 -w '\\n%{http_code}' http://127.0.0.1:" + p + "/healthz");
    INFO(plain);
    CHECK(plain.find("this port speaks HTTPS") != std::string::npos);
    CHECK(plain.ends_with("\n400"));
    // A client that does not trust the certificate gets no answer, and the server is unharmed.
    CHECK(run_capture("curl -sS --max-time 60 -o /dev/null -w '%{http_code}' https://127.0.0.1:" + p +
                      "/healthz 2>/dev/null") == "000");
    CHECK(run_capture(https + "/healthz").ends_with("\n200"));

    const std::vector<pid_t> vms = children_of(f.server->pid());
    f.server->signal(SIGTERM);
    REQUIRE(poll_until([&] { return f.server->exited(); }, 120s));
    CHECK(WEXITSTATUS(f.server->status()) == 0);
    CHECK(forkvm::test::all_reaped(vms, 30s));
}
