// The snapshot, template and pool routes over a FakeService: shapes, status
// codes, ownership, input checks.
#include <doctest/doctest.h>

#include "tests/unit/server_test_support.hpp"

using namespace forkvm::server;
using namespace forkvm::server::test;

TEST_CASE("server catalog: snapshot a sandbox, list, get, delete") {
    Fixture f;
    auto r = f.call("POST", "/v1/sandboxes/sb-a/snapshot", R"({"labels":{"v":"1"}})");
    REQUIRE(r.status == 201);
    const auto snap = r.json();
    const std::string id = snap["id"];
    CHECK(r.header("location") == "/v1/snapshots/" + id);
    CHECK(snap["source_sandbox"] == "sb-a");
    CHECK(snap["labels"]["v"] == "1");
    CHECK(snap["memory_bytes"] == 256 << 20);
    CHECK(snap["templates"].is_array());
    CHECK(snap["created_at"].get<std::string>().ends_with("Z"));
    CHECK(f.call("POST", "/v1/sandboxes/sb-a/snapshot").status == 201);  // no body is fine

    r = f.call("GET", "/v1/snapshots");
    CHECK(r.status == 200);
    CHECK(r.json()["snapshots"].size() == 2);
    CHECK(f.call("GET", "/v1/snapshots", "", {}, key_b).json()["snapshots"].empty());
    CHECK(f.call("GET", "/v1/snapshots/" + id).json()["id"] == id);
    CHECK(f.call("GET", "/v1/snapshots/" + id, "", {}, key_b).status == 404);
    CHECK(f.call("DELETE", "/v1/snapshots/" + id, "", {}, key_b).status == 404);
    CHECK(f.call("DELETE", "/v1/snapshots/" + id).status == 204);
    CHECK(f.call("GET", "/v1/snapshots/" + id).status == 404);
}

TEST_CASE("server catalog: bad snapshot requests") {
    Fixture f;
    CHECK(f.call("POST", "/v1/sandboxes/sb-b/snapshot").status == 404);  // key_b's sandbox
    auto r = f.call("POST", "/v1/sandboxes/sb-a/snapshot", R"({"label":{}})");
    CHECK(r.status == 400);
    CHECK(r.json()["error"]["field"] == "label");
    CHECK(f.call("POST", "/v1/sandboxes/sb-a/snapshot", R"({"labels":[1]})").status == 400);
    CHECK(f.call("POST", "/v1/sandboxes/sb-a/snapshot", "{").status == 400);
    CHECK(f.call("POST", "/v1/sandboxes/sb-a/snapshot", "x", {{"Content-Type", "text/plain"}}).status == 415);
    CHECK(f.call("GET", "/v1/snapshots?x=1").status == 400);
    CHECK(f.call("PUT", "/v1/snapshots").status == 405);
    CHECK(f.call("GET", "/v1/snapshots", "", {}, "").status == 401);
    f.service.fail_with = forkvm::pool::ServiceError(forkvm::pool::ErrorCode::rate_limited, "snapshot quota");
    r = f.call("POST", "/v1/sandboxes/sb-a/snapshot");
    CHECK(r.status == 429);
    CHECK(!r.header("retry-after").empty());
}

TEST_CASE("server catalog: templates: create, list, get, update, delete, sandboxes from them") {
    Fixture f;
    const std::string snap = f.call("POST", "/v1/sandboxes/sb-a/snapshot").json()["id"];
    auto r = f.call("POST", "/v1/templates",
                    R"({"name":"py","snapshot_id":")" + snap + R"(","min_warm":1,"max_warm":3})");
    REQUIRE(r.status == 201);
    CHECK(r.header("location") == "/v1/templates/py");
    auto t = r.json();
    CHECK(t["name"] == "py");
    CHECK(t["snapshot_id"] == snap);
    CHECK(t["state"] == "ready");
    CHECK_FALSE(t.contains("error"));
    CHECK(t["min_warm"] == 1);
    CHECK(t["max_warm"] == 3);
    CHECK(t["pool"]["warm"].is_number());
    CHECK(f.service.last_create_template.min_warm == std::optional<std::size_t>(1));

    CHECK(f.call("GET", "/v1/templates").json()["templates"].size() == 1);
    CHECK(f.call("GET", "/v1/templates", "", {}, key_b).json()["templates"].empty());
    CHECK(f.call("GET", "/v1/templates/py").json()["name"] == "py");
    CHECK(f.call("GET", "/v1/templates/py", "", {}, key_b).status == 404);
    CHECK(f.call("GET", "/v1/snapshots/" + snap).json()["templates"][0] == "py");
    CHECK(f.call("DELETE", "/v1/snapshots/" + snap).status == 409);

    r = f.call("PATCH", "/v1/templates/py", R"({"max_warm":5})");
    CHECK(r.status == 200);
    CHECK(r.json()["max_warm"] == 5);
    CHECK_FALSE(f.service.last_update_template.min_warm.has_value());

    r = f.call("POST", "/v1/sandboxes", R"({"template":"py"})");
    CHECK(r.status == 201);
    CHECK(r.json()["template"] == "py");
    CHECK(f.service.last_create.template_name == "py");
    CHECK(f.call("POST", "/v1/sandboxes", "{}").json()["template"].is_null());

    r = f.call("GET", "/v1/pools");
    CHECK(r.status == 200);
    const auto pools = r.json()["pools"];
    REQUIRE(pools.size() == 2);
    CHECK(pools[0]["name"] == "default");
    CHECK(pools[0]["template"].is_null());
    CHECK(pools[1]["name"] == "py");
    CHECK(pools[1]["template"] == "py");
    CHECK(f.call("GET", "/v1/pools", "", {}, key_b).json()["pools"].size() == 1);

    CHECK(f.call("DELETE", "/v1/templates/py", "", {}, key_b).status == 404);
    CHECK(f.call("DELETE", "/v1/templates/py").status == 204);
    CHECK(f.call("GET", "/v1/templates/py").status == 404);
    CHECK(f.call("DELETE", "/v1/snapshots/" + snap).status == 204);
}

TEST_CASE("server catalog: bad template requests") {
    Fixture f;
    const auto field = [&](const std::string& method, const std::string& target, const std::string& body) {
        const auto r = f.call(method, target, body);
        CHECK(r.status == 400);
        return r.json()["error"].value("field", "");
    };
    CHECK(field("POST", "/v1/templates", R"({"snapshot_id":"snap-1"})") == "name");
    CHECK(field("POST", "/v1/templates", R"({"name":"Py","snapshot_id":"snap-1"})") == "name");
    CHECK(field("POST", "/v1/templates", R"({"name":"py"})") == "snapshot_id");
    CHECK(field("POST", "/v1/templates", R"({"name":"py","snapshot_id":"s","min_warm":-1})") == "min_warm");
    CHECK(field("POST", "/v1/templates", R"({"name":"py","snapshot_id":"s","max_warm":"2"})") == "max_warm");
    CHECK(field("POST", "/v1/templates", R"({"name":"py","snapshot_id":"s","extra":1})") == "extra");
    CHECK(f.call("POST", "/v1/templates", "").status == 400);
    CHECK(field("PATCH", "/v1/templates/py", "{}") == "min_warm");
    CHECK(field("POST", "/v1/sandboxes", R"({"template":"../x"})") == "name");
    CHECK(f.call("POST", "/v1/templates", R"({"name":"py","snapshot_id":"snap-0000000000000000"})").status ==
          404);
    CHECK(f.call("PATCH", "/v1/templates/nope", R"({"min_warm":1})").status == 404);
    CHECK(f.call("DELETE", "/v1/templates/nope").status == 404);
    CHECK(f.call("PUT", "/v1/templates/py").status == 405);
}

TEST_CASE("server catalog: export streams the snapshot, import spools the body to disk and cleans up") {
    Fixture f;
    const std::string snap = f.call("POST", "/v1/sandboxes/sb-a/snapshot").json()["id"];
    auto r = f.call("GET", "/v1/snapshots/" + snap + "/export");
    CHECK(r.status == 200);
    CHECK(r.header("content-type") == "application/octet-stream");
    CHECK(r.header("transfer-encoding") == "chunked");
    CHECK(r.body.size() == 4000 * ("EXPORT:" + snap + "\n").size());
    CHECK(f.call("GET", "/v1/snapshots/" + snap + "/export", "", {}, key_b).status == 404);
    CHECK(f.call("GET", "/v1/snapshots/" + snap + "/export?x=1").status == 400);

    const std::string upload = "FAKE-EXPORT" + std::string(100 * 1024, 'x');
    r = f.call("POST", "/v1/snapshots/import", upload, {{"Content-Type", "application/octet-stream"}});
    CHECK(r.status == 201);
    CHECK(r.json()["source_sandbox"].is_null());
    CHECK(r.header("location") == "/v1/snapshots/" + r.json()["id"].get<std::string>());
    CHECK(f.service.last_import_size == upload.size());

    r = f.call("POST", "/v1/snapshots/import", "garbage", {{"Content-Type", "application/octet-stream"}});
    CHECK(r.status == 400);
    CHECK(r.json()["error"]["field"] == "body");
    // Above server.max_import_bytes (256 KiB in these tests): refused before any byte is stored.
    r = f.call("POST", "/v1/snapshots/import", std::string(300 * 1024, 'x'),
               {{"Content-Type", "application/octet-stream"}});
    CHECK(r.status == 413);
    CHECK(f.call("POST", "/v1/snapshots/import", "", {}, "").status == 401);

    // Nothing is left in the spool folder.
    std::size_t spooled = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(test_options().spool_dir))
        ++spooled;
    CHECK(spooled == 0U);
}

TEST_CASE("server catalog: an import body larger than the limit without Content-Length is cut off with 413") {
    Fixture f;
    RawConnection raw(f.port());
    REQUIRE(raw.connected());
    raw.send("POST /v1/snapshots/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key_a +
             "\r\nTransfer-Encoding: chunked\r\n\r\n");
    const std::string chunk(64 * 1024, 'y');
    char size_line[32];
    std::snprintf(size_line, sizeof size_line, "%zx\r\n", chunk.size());
    for (int i = 0; i < 5; ++i) {
        if (!raw.send(std::string(size_line) + chunk + "\r\n")) break;
    }
    const auto reply = raw.read_until("}}");
    CHECK(status_of(reply) == 413);
    std::size_t spooled = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(test_options().spool_dir))
        ++spooled;
    CHECK(spooled == 0U);
}
