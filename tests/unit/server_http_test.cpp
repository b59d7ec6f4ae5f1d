// End-to-end: real HTTP against HttpServer over a scripted FakeService.
#include <doctest/doctest.h>

#include "server/error_response.hpp"
#include "server_test_support.hpp"

using namespace forkvm::server;
using namespace forkvm::server::test;
using forkvm::pool::ErrorCode;
using forkvm::pool::ServiceError;

TEST_CASE("server: health, readiness, openapi and pools") {
    Fixture f;
    auto r = f.call("GET", "/healthz", "", {}, "");
    CHECK(r.status == 200);
    CHECK(r.json() == nlohmann::json{{"status", "ok"}});
    CHECK(r.header("x-request-id").starts_with("req-"));
    r = f.call("GET", "/readyz", "", {}, "");
    CHECK(r.status == 200);
    CHECK(r.json()["warm"] == 2);
    {
        const std::lock_guard lock(f.service.mutex);
        f.service.is_ready = false;
    }
    r = f.call("GET", "/readyz", "", {}, "");
    CHECK(r.status == 503);
    CHECK(r.json()["error"]["code"] == "unavailable");
    CHECK(r.header("retry-after") == "1");
    r = f.call("GET", "/openapi.yaml", "", {}, "");
    CHECK(r.status == 200);
    CHECK(r.header("content-type") == "application/yaml");
    CHECK(r.body.starts_with("openapi:"));
    r = f.call("GET", "/v1/pools");
    CHECK(r.status == 200);
    CHECK(r.json()["pools"][0]["name"] == "default");
    CHECK(r.json()["pools"][0]["max_warm"] == 4);
}

TEST_CASE("server: sandbox lifecycle routes and JSON shapes") {
    Fixture f;
    auto r = f.call("POST", "/v1/sandboxes",
                    R"({"ttl_ms":60000,"labels":{"team":"x"},"env":{"A":"1"},"user":"u"})");
    REQUIRE(r.status == 201);
    const auto created = r.json();
    const std::string id = created["id"];
    CHECK(r.header("location") == "/v1/sandboxes/" + id);
    CHECK(created["state"] == "running");
    CHECK(created["created_at"] == "2026-11-18T11:06:40.123Z");
    CHECK(created["labels"]["team"] == "x");
    CHECK(created["env"]["A"] == "1");
    CHECK(created["user"] == "u");
    CHECK_FALSE(created.contains("broken_reason"));
    CHECK(f.service.last_create.ttl == std::chrono::milliseconds(60000));

    CHECK(f.call("POST", "/v1/sandboxes").status == 201);  // empty body is fine
    CHECK(f.call("POST", "/v1/sandboxes", "{}").status == 201);

    r = f.call("GET", "/v1/sandboxes/" + id);
    CHECK(r.status == 200);
    CHECK(r.json()["id"] == id);

    r = f.call("GET", "/v1/sandboxes?limit=1&label=team%3Dx");
    CHECK(r.status == 200);
    CHECK(r.json()["sandboxes"].size() == 1U);
    CHECK(r.json()["next_page_token"] == "next");
    CHECK(f.service.last_list.label_filter.at("team") == "x");
    r = f.call("GET", "/v1/sandboxes");
    CHECK(r.json()["next_page_token"].is_null());
    CHECK(f.call("GET", "/v1/sandboxes?limit=0").json()["error"]["field"] == "limit");

    r = f.call("POST", "/v1/sandboxes/" + id + "/keepalive", R"({"ttl_ms":5000})");
    CHECK(r.status == 200);
    CHECK(r.json()["expires_at"] == "2026-11-18T11:06:45.123Z");

    r = f.call("POST", "/v1/sandboxes/" + id + "/fork", R"({"count":2})");
    CHECK(r.status == 201);
    CHECK(r.json()["sandboxes"].size() == 2U);
    r = f.call("POST", "/v1/sandboxes/" + id + "/fork", R"({"count":5})");
    CHECK(r.status == 400);
    CHECK(r.json()["error"]["field"] == "count");

    r = f.call("GET", "/v1/sandboxes/" + id + "/console");
    CHECK(r.status == 200);
    CHECK(r.json()["console"] == "boot ok\n\xef\xbf\xbd");  // invalid UTF-8 replaced

    r = f.call("DELETE", "/v1/sandboxes/" + id);
    CHECK(r.status == 204);
    CHECK(r.body.empty());
    CHECK(f.call("GET", "/v1/sandboxes/" + id).status == 404);
}

TEST_CASE("server: auth is required and owners are isolated") {
    Fixture f;
    auto r = f.call("GET", "/v1/sandboxes/sb-a", "", {}, "");
    CHECK(r.status == 401);
    CHECK(r.header("www-authenticate") == "Bearer");
    CHECK(r.json()["error"]["code"] == "unauthorized");
    r = f.call("GET", "/v1/sandboxes/sb-a", "", {}, "wrong-key");
    CHECK(r.status == 401);
    CHECK(f.call("GET", "/v1/sandboxes/sb-a", "", {}, key_a).status == 200);
    r = f.call("GET", "/v1/sandboxes/sb-a", "", {}, key_b);  // another owner's sandbox
    CHECK(r.status == 404);
    CHECK(r.json()["error"]["code"] == "not_found");
    r = f.call("GET", "/v1/sandboxes/sb-expired");
    CHECK(r.status == 404);
    CHECK(r.json()["error"]["code"] == "expired");
    CHECK(f.call("GET", "/metrics", "", {}, key_a).status == 401);
    CHECK(f.call("GET", "/metrics", "", {}, admin_key).status == 200);
}

TEST_CASE("server: malformed requests answer 400/404/405/415 with the field") {
    Fixture f;
    auto r = f.call("POST", "/v1/sandboxes/sb-a/exec", R"({"cmd":["ls"])");
    CHECK(r.status == 400);
    CHECK(r.json()["error"]["code"] == "invalid_argument");
    CHECK(r.json()["error"]["field"] == "body");
    CHECK(r.json()["error"]["request_id"] == r.header("x-request-id"));
    CHECK(f.call("POST", "/v1/sandboxes/sb-a/exec", R"({"cmd":"ls"})").json()["error"]["field"] == "cmd");
    CHECK(f.call("POST", "/v1/sandboxes/sb-a/exec", R"({"cmd":["ls"],"bogus":1})").json()["error"]["field"] ==
          "bogus");
    CHECK(f.call("POST", "/v1/sandboxes/sb-a/exec", R"({"env":{}})").json()["error"]["field"] == "cmd");
    CHECK(
        f.call("POST", "/v1/sandboxes/sb-a/exec", R"({"cmd":["a"],"shell":"b"})").json()["error"]["field"] ==
        "cmd");
    CHECK(f.call("POST", "/v1/sandboxes", R"({"ttl_ms":0})").json()["error"]["field"] == "ttl_ms");
    CHECK(f.call("GET", "/v1/sandboxes/sb-a/files/stat?path=relative").json()["error"]["field"] == "path");
    CHECK(f.call("GET", "/v1/sandboxes/sb-a/files/stat").json()["error"]["field"] == "path");

    r = f.call("GET", "/v1/nothing");
    CHECK(r.status == 404);
    CHECK(r.json()["error"]["code"] == "not_found");
    r = f.call("PATCH", "/v1/sandboxes/sb-a");
    CHECK(r.status == 405);
    CHECK(r.header("allow") == "GET, DELETE");
    CHECK(r.json()["error"]["code"] == "invalid_argument");
    r = f.call("POST", "/v1/sandboxes", "ttl=5", {{"Content-Type", "text/plain"}});
    CHECK(r.status == 415);
    CHECK(r.json()["error"]["code"] == "invalid_argument");
    // curl -d sends JSON as application/x-www-form-urlencoded: parsed as JSON.
    r = f.call("POST", "/v1/sandboxes", R"({"ttl_ms":60000})",
               {{"Content-Type", "application/x-www-form-urlencoded"}});
    CHECK(r.status == 201);
    r = f.call("POST", "/v1/sandboxes", "ttl=5", {{"Content-Type", "application/x-www-form-urlencoded"}});
    CHECK(r.status == 400);
    r = f.call("GET", "/healthz", "", {{"X-Request-Id", "my-id.1"}}, "");
    CHECK(r.header("x-request-id") == "my-id.1");
    r = f.call("GET", "/healthz", "", {{"X-Request-Id", "bad id!"}}, "");
    CHECK(r.header("x-request-id").starts_with("req-"));
}

TEST_CASE("server: buffered exec returns text or base64 output") {
    Fixture f;
    auto r = f.call("POST", "/v1/sandboxes/sb-a/exec",
                    R"({"cmd":["echo","hi"],"env":{"X":"1"},"cwd":"/tmp","stdin":"in","timeout_ms":100})");
    REQUIRE(r.status == 200);
    const auto j = r.json();
    CHECK(j["exit_code"] == 3);
    CHECK(j["signal"].is_null());
    CHECK(j["stdout"] == "hello\n");
    CHECK(j["stdout_encoding"] == "utf-8");
    CHECK(j["stderr"] == "AP8=");
    CHECK(j["stderr_encoding"] == "base64");
    CHECK(j["timed_out"] == false);
    CHECK(j["cancelled"] == false);
    CHECK(j["stdout_truncated"] == false);
    CHECK(j["duration_ms"] == 1.5);
    CHECK(f.service.last_exec.argv == std::vector<std::string>{"echo", "hi"});
    CHECK(f.service.last_exec.cwd == "/tmp");
    CHECK(f.service.last_exec.stdin_data == "in");
    CHECK(f.service.last_exec.max_output_bytes == 1000U);
    r = f.call("POST", "/v1/sandboxes/sb-a/exec", R"({"shell":"signal"})");
    CHECK(r.json()["exit_code"].is_null());
    CHECK(r.json()["signal"] == 9);
    CHECK(f.service.last_exec.argv == std::vector<std::string>{"/bin/sh", "-c", "signal"});
}

TEST_CASE("server: file routes") {
    Fixture f;
    auto r = f.call("PUT", "/v1/sandboxes/sb-a/files?path=%2Fdata%2Fa.txt&mode=0600&parents=true",
                    std::string(5000, 'x'), {{"Content-Type", "application/octet-stream"}});
    REQUIRE(r.status == 201);
    CHECK(r.json() == nlohmann::json{{"path", "/data/a.txt"}, {"size", 5000}});
    CHECK(f.service.files["/data/a.txt"] == std::string(5000, 'x'));
    CHECK(f.service.last_write.mode == 0600U);
    CHECK(f.service.last_write.create_parents);

    r = f.call("GET", "/v1/sandboxes/sb-a/files?path=/data/a.txt&offset=10&length=100");
    CHECK(r.status == 200);
    CHECK(r.header("content-type") == "application/octet-stream");
    CHECK(r.body == std::string(100, 'x'));
    r = f.call("GET", "/v1/sandboxes/sb-a/files?path=/missing");
    CHECK(r.status == 404);
    CHECK(r.json()["error"]["message"] == "no such file: /missing");

    r = f.call("GET", "/v1/sandboxes/sb-a/files/stat?path=/data/a.txt");
    CHECK(r.status == 200);
    CHECK(r.json()["type"] == "file");
    CHECK(r.json()["mode"] == "0644");
    CHECK(r.json()["size"] == 5000);
    CHECK(r.json()["mtime"] == "2023-11-14T22:13:20.123Z");
    r = f.call("GET", "/v1/sandboxes/sb-a/files/list?path=/");
    CHECK(r.status == 200);
    CHECK(r.json()["entries"][0] ==
          nlohmann::json{{"name", "bin"}, {"type", "directory"}, {"size", 4096}, {"mode", "0755"}});
    CHECK(r.json()["truncated"] == false);
    r = f.call("POST", "/v1/sandboxes/sb-a/files/mkdir", R"({"path":"/d","parents":true,"mode":"0700"})");
    CHECK(r.status == 201);
    CHECK(f.service.call_count("mkdir:/d:p:448") == 1U);
    r = f.call("POST", "/v1/sandboxes/sb-a/files/move", R"({"from":"/a","to":"/b"})");
    CHECK(r.status == 200);
    CHECK(r.json() == nlohmann::json{{"from", "/a"}, {"to", "/b"}});
    r = f.call("DELETE", "/v1/sandboxes/sb-a/files?path=/d&recursive=true");
    CHECK(r.status == 204);
    CHECK(f.service.call_count("remove_path:/d:r") == 1U);
    CHECK(f.call("GET", "/v1/sandboxes/sb-b/files/list?path=/").status == 404);  // other owner
}

TEST_CASE("server: every service error code maps to its status and Retry-After") {
    Fixture f;
    for (const auto code : forkvm::pool::all_error_codes) {
        {
            const std::lock_guard lock(f.service.mutex);
            f.service.fail_with = ServiceError(code, "scripted failure", std::nullopt, 7);
        }
        const auto r = f.call("GET", "/v1/sandboxes/sb-a");
        INFO("code " << forkvm::pool::to_string(code));
        CHECK(r.status == http_status(code));
        CHECK(r.json()["error"]["code"] == std::string(forkvm::pool::to_string(code)));
        if (r.status == 429 || r.status == 503) {
            CHECK(r.header("retry-after") == "7");
        } else {
            CHECK(r.header("retry-after").empty());
        }
        if (code == ErrorCode::internal) CHECK(r.json()["error"]["message"] == "internal error");
    }
}

TEST_CASE("server: /metrics renders the server's counters and the service stats") {
    Fixture f;
    f.call("GET", "/v1/sandboxes/sb-a");
    f.call("GET", "/v1/sandboxes/nope");
    f.call("GET", "/v1/sandboxes/nope");
    const auto r = f.call("GET", "/metrics", "", {}, admin_key);
    REQUIRE(r.status == 200);
    CHECK(r.header("content-type").starts_with("text/plain; version=0.0.4"));
    const auto& m = r.body;
    CHECK(m.find(R"(forkvm_http_requests_total{method="GET",route="/v1/sandboxes/{id}",status="200"} 1)") !=
          std::string::npos);
    CHECK(m.find(R"(forkvm_http_requests_total{method="GET",route="/v1/sandboxes/{id}",status="404"} 2)") !=
          std::string::npos);
    CHECK(m.find(R"(forkvm_http_errors_total{code="not_found"} 2)") != std::string::npos);
    CHECK(m.find("forkvm_pool_warm 2\n") != std::string::npos);
    CHECK(m.find("forkvm_live_vms 3\n") != std::string::npos);
    CHECK(m.find("forkvm_forks_total 5\n") != std::string::npos);
    CHECK(m.find(R"(forkvm_lease_latency_seconds_bucket{le="0.001"} 3)") != std::string::npos);
    CHECK(m.find(R"(forkvm_lease_latency_seconds_bucket{le="+Inf"} 3)") != std::string::npos);
    CHECK(m.find("forkvm_sandboxes_created_total 9\n") != std::string::npos);
    for (const auto* name :
         {"forkvm_leases_total", "forkvm_lease_timeouts_total", "forkvm_pool_forking", "forkvm_pool_leased",
          "forkvm_pool_min_warm", "forkvm_pool_max_warm", "forkvm_fork_failures_total",
          "forkvm_sandbox_fork_latency_seconds_count", "forkvm_exec_latency_seconds_sum",
          "forkvm_execs_total", "forkvm_sandboxes_live", "forkvm_sandboxes_expired_total"}) {
        INFO(name);
        CHECK(m.find(std::string("\n") + name + " ") != std::string::npos);
    }
}
