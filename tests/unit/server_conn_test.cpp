// Connection behaviour: limits, timeouts, keep-alive, the connection cap,
// streaming with backpressure and disconnects, graceful stop, fd hygiene.
#include <doctest/doctest.h>
#include <thread>

#include "server_test_support.hpp"

using namespace forkvm::server;
using namespace forkvm::server::test;

namespace {

std::string get_request(const std::string& target, const std::string& extra = "") {
    return "GET " + target + " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key_a + "\r\n" + extra +
           "\r\n";
}

}  // namespace

TEST_CASE("server: keep-alive serves two requests on one connection") {
    Fixture f;
    Client client(f.port());
    CHECK(client.request("GET", "/v1/sandboxes/sb-a").status == 200);
    CHECK(client.request("GET", "/v1/sandboxes/nope").status == 404);
    CHECK(client.request("POST", "/v1/sandboxes/sb-a/exec", R"({"cmd":["x"]})").status == 200);
}

TEST_CASE("server: 413 for a too-big JSON body and a too-big upload, 431 for huge headers") {
    Fixture f;
    auto r = f.call("POST", "/v1/sandboxes", R"({"labels":{"a":")" + std::string(5000, 'x') + R"("}})");
    CHECK(r.status == 413);
    CHECK(r.json()["error"]["code"] == "payload_too_large");
    r = f.call("PUT", "/v1/sandboxes/sb-a/files?path=/big", std::string(64 * 1024 + 1, 'x'),
               {{"Content-Type", "application/octet-stream"}});
    CHECK(r.status == 413);
    CHECK(f.service.call_count("write_file") == 0U);
    // The same size minus one byte fits.
    r = f.call("PUT", "/v1/sandboxes/sb-a/files?path=/big", std::string(64 * 1024, 'x'),
               {{"Content-Type", "application/octet-stream"}});
    CHECK(r.status == 201);

    // Chunked upload without Content-Length is limited while reading.
    RawConnection chunked(f.port());
    std::string body;
    for (int i = 0; i < 70; ++i) body += "400\r\n" + std::string(1024, 'y') + "\r\n";
    chunked.send("PUT /v1/sandboxes/sb-a/files?path=/c HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
                 key_a + "\r\nTransfer-Encoding: chunked\r\n\r\n" + body + "0\r\n\r\n");
    CHECK(status_of(chunked.read_until("\r\n\r\n")) == 413);

    RawConnection huge(f.port());
    huge.send(get_request("/healthz", "X-Big: " + std::string(8000, 'h') + "\r\n"));
    const auto reply = huge.read_until("}");
    CHECK(status_of(reply) == 431);
    CHECK(reply.find("payload_too_large") != std::string::npos);
    CHECK(huge.closed_by_peer(std::chrono::seconds(3)));
}

TEST_CASE("server: Expect: 100-continue gets an interim response before the body") {
    Fixture f;
    RawConnection c(f.port());
    c.send("PUT /v1/sandboxes/sb-a/files?path=/e HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key_a +
           "\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    CHECK(c.read_until("\r\n\r\n").starts_with("HTTP/1.1 100 Continue"));
    c.send("abc");
    CHECK(c.read_until("}").find("HTTP/1.1 201") != std::string::npos);
    CHECK(f.service.files["/e"] == "abc");
}

TEST_CASE("server: a client that never completes its request is closed after the read timeout") {
    auto options = test_options();
    options.read_timeout = std::chrono::milliseconds(300);
    Fixture f(options);
    RawConnection silent(f.port());
    RawConnection partial(f.port());
    partial.send("GET /healthz HTTP/1.1\r\nHost: x\r\n");  // never ends the headers
    const auto start = std::chrono::steady_clock::now();
    CHECK(silent.closed_by_peer(std::chrono::seconds(3)));
    CHECK(partial.closed_by_peer(std::chrono::seconds(3)));
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(2));
    // The server still works.
    CHECK(f.call("GET", "/healthz", "", {}, "").status == 200);
}

TEST_CASE("server: connections beyond max_connections get 503 and are closed") {
    auto options = test_options();
    options.max_connections = 2;
    Fixture f(options);
    RawConnection a(f.port());
    RawConnection b(f.port());
    // Make sure both are accepted before the third.
    a.send(get_request("/healthz"));
    b.send(get_request("/healthz"));
    a.read_until("}");
    b.read_until("}");
    RawConnection c(f.port());
    const auto reply = c.read_until("}");
    CHECK(status_of(reply) == 503);
    CHECK(reply.find("Retry-After: 1") != std::string::npos);
    CHECK(c.closed_by_peer(std::chrono::seconds(3)));
    a.close();
    // Once one closes, new connections are served again.
    bool served = false;
    for (int i = 0; i < 50 && !served; ++i) {
        RawConnection d(f.port());
        d.send(get_request("/healthz"));
        served = status_of(d.read_until("}")) == 200;
        if (!served) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    CHECK(served);
}

TEST_CASE("server: a full worker pool answers 503 with Retry-After") {
    auto options = test_options();
    options.worker_threads = 1;
    options.worker_queue = 0;
    Fixture f(options);
    RawConnection blocker(f.port());
    const std::string body = R"({"cmd":["block"]})";
    blocker.send("POST /v1/sandboxes/sb-a/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key_a +
                 "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                 "\r\n\r\n" + body);
    REQUIRE(f.service.wait_blocked(1));
    const auto r = f.call("GET", "/v1/sandboxes/sb-a");
    CHECK(r.status == 503);
    CHECK(r.json()["error"]["code"] == "unavailable");
    CHECK(r.header("retry-after") == "1");
    f.service.release();
    CHECK(status_of(blocker.read_until("}")) == 200);
}

TEST_CASE("server: streaming exec sends chunks before the command ends, disconnect fires the stop token") {
    Fixture f;
    const std::string body = R"({"cmd":["block"]})";
    {
        RawConnection c(f.port());
        c.send("POST /v1/sandboxes/sb-a/exec?stream=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " +
               key_a + "\r\nContent-Type: application/json\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n\r\n" + body);
        const auto head = c.read_until(R"("type":"stderr")");
        CHECK(status_of(head) == 200);
        CHECK(head.find("Transfer-Encoding: chunked") != std::string::npos);
        CHECK(head.find("application/x-ndjson") != std::string::npos);
        CHECK(head.find(R"({"type":"started","pid":42})") != std::string::npos);
        CHECK(head.find(R"({"type":"stdout","data":"first\n","encoding":"utf-8"})") != std::string::npos);
        CHECK(head.find(R"({"type":"stderr","data":"//4=","encoding":"base64"})") != std::string::npos);
        REQUIRE(f.service.wait_blocked(1));  // the command is still running
        CHECK(head.find("exit") == std::string::npos);
    }  // the client goes away
    CHECK(f.service.wait_stop_seen());
}

TEST_CASE("server: streaming exec ends with an exit event, or an error event after a late failure") {
    Fixture f;
    Client client(f.port());
    auto r = client.request("POST", "/v1/sandboxes/sb-a/exec", R"({"cmd":["x"]})",
                            {{"Accept", "application/x-ndjson"}});
    CHECK(r.status == 200);
    std::vector<nlohmann::json> lines;
    std::size_t at = 0;
    while (at < r.body.size()) {
        const auto nl = r.body.find('\n', at);
        lines.push_back(nlohmann::json::parse(r.body.substr(at, nl - at)));
        at = nl + 1;
    }
    REQUIRE(lines.size() == 5U);
    CHECK(lines.back()["type"] == "exit");
    CHECK(lines.back()["exit_code"] == 0);
    CHECK_FALSE(lines.back().contains("stdout"));
    // Keep-alive survives a stream.
    r = client.request("POST", "/v1/sandboxes/sb-a/exec?stream=true", R"({"cmd":["fail-late"]})");
    CHECK(r.status == 200);
    CHECK(r.body.find(R"("type":"error")") != std::string::npos);
    CHECK(r.body.find(R"("code":"vm_broken")") != std::string::npos);
    // An error before the start is a plain error status.
    r = client.request("POST", "/v1/sandboxes/nope/exec?stream=true", R"({"cmd":["x"]})");
    CHECK(r.status == 404);
}

TEST_CASE("server: buffered exec is cancelled when the client disconnects") {
    Fixture f;
    {
        RawConnection c(f.port());
        const std::string body = R"({"cmd":["block"]})";
        c.send("POST /v1/sandboxes/sb-a/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key_a +
               "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
               "\r\n\r\n" + body);
        REQUIRE(f.service.wait_blocked(1));
    }
    CHECK(f.service.wait_stop_seen());
}

TEST_CASE("server: downloads stream as chunked octet-stream") {
    Fixture f;
    std::string content;
    for (int i = 0; i < 20000; ++i) content += static_cast<char>(i % 251);
    f.service.files["/bin.dat"] = content;
    f.service.files["/block"] = std::string(10000, 'b');
    f.service.files["/empty"] = "";
    auto r = f.call("GET", "/v1/sandboxes/sb-a/files?path=/bin.dat");
    CHECK(r.status == 200);
    CHECK(r.header("transfer-encoding") == "chunked");
    CHECK(r.body == content);
    r = f.call("GET", "/v1/sandboxes/sb-a/files?path=/empty");
    CHECK(r.status == 200);
    CHECK(r.body.empty());
    // The first chunk arrives while the service is still reading.
    RawConnection c(f.port());
    c.send(get_request("/v1/sandboxes/sb-a/files?path=/block"));
    const auto head = c.read_until(std::string(4096, 'b'));
    CHECK(status_of(head) == 200);
    CHECK(head.find(std::string(4096, 'b')) != std::string::npos);
    REQUIRE(f.service.wait_blocked(1));
    c.close();
    CHECK(f.service.wait_stop_seen());
}

TEST_CASE("server: graceful stop finishes an in-flight request, then refuses connections") {
    Fixture f;
    const auto port = f.port();
    RawConnection c(port);
    const std::string body = R"({"cmd":["block"]})";
    c.send("POST /v1/sandboxes/sb-a/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key_a +
           "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body);
    REQUIRE(f.service.wait_blocked(1));
    RawConnection idle(port);
    idle.send(get_request("/healthz"));
    idle.read_until("}");
    std::thread stopper([&] { f.server.stop(std::chrono::seconds(5)); });
    CHECK(idle.closed_by_peer(std::chrono::seconds(3)));  // idle keep-alive closes at once
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    f.service.release();
    const auto reply = c.read_until("}");
    CHECK(status_of(reply) == 200);
    CHECK(reply.find("Connection: close") != std::string::npos);
    stopper.join();
    RawConnection after(port);
    CHECK_FALSE(after.connected());
}

TEST_CASE("server: stop at the deadline cancels what is still running") {
    Fixture f;
    RawConnection c(f.port());
    const std::string body = R"({"cmd":["block"]})";
    c.send("POST /v1/sandboxes/sb-a/exec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + key_a +
           "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\n\r\n" + body);
    REQUIRE(f.service.wait_blocked(1));
    const auto start = std::chrono::steady_clock::now();
    f.server.stop(std::chrono::milliseconds(200));
    CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(3));
    CHECK(f.service.stop_seen);
    CHECK(c.closed_by_peer(std::chrono::seconds(2)));
}

TEST_CASE("server: no file descriptors leak across many connections") {
    Fixture f;
    for (int i = 0; i < 5; ++i) f.call("GET", "/healthz", "", {}, "");  // warm up
    const auto before = open_fds();
    for (int i = 0; i < 100; ++i) {
        if (i % 3 == 0) {
            RawConnection c(f.port());
            c.send("GARBAGE\r\n\r\n");
            c.read_until("}");
        } else {
            CHECK(f.call("GET", i % 2 == 0 ? "/healthz" : "/v1/sandboxes/sb-a", "", {}, key_a).status == 200);
        }
    }
    // Server-side closes may lag the client's by a moment.
    for (int i = 0; i < 200 && (open_fds() > before || f.server.open_connections() > 0); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    CHECK(open_fds() <= before);
    CHECK(f.server.open_connections() == 0U);
}
