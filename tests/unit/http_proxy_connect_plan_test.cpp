// plan_connection (http_proxy/connect_plan.hpp): from a client's request
// head to a refusal or to one checked address with the bytes for each side;
// and the hosts map it resolves names through.

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <string>

#include "http_proxy/connect_plan.hpp"

using namespace forkvm::http_proxy;

namespace {

const Policy& policy() {
    static const Policy p = Policy::parse(nlohmann::json::parse(R"({
      "allow": [
        {"domain": "api.test", "ports": [80, 443]},
        {"domain": "files.test", "ports": [80], "methods": ["GET"], "paths": ["/pub/"]},
        {"domain": "inside.test", "ports": [80]},
        {"domain": "split.test", "ports": [443]},
        {"ip": "8.8.8.8", "ports": [443]}
      ],
      "allow_private": ["10.9.9.9"]
    })"));
    return p;
}

const HostsMap& hosts() {
    static const HostsMap h = HostsMap::parse(
        {"api.test=8.8.4.4", "files.test=8.8.4.5", "inside.test=127.0.0.1", "inside.test=10.0.0.1",
         "split.test=169.254.169.254", "split.test=9.9.9.9", "private.test=10.9.9.9"});
    return h;
}

ConnectPlan plan(const std::string& head) { return plan_connection(head, policy(), hosts()); }

}  // namespace

TEST_CASE("connect plan: an allowed CONNECT goes to the name's checked address, with 200 for the client") {
    const ConnectPlan p = plan("CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n");
    REQUIRE(p.allowed());
    CHECK(p.status == 200);
    CHECK(p.address->to_string() == "8.8.4.4");
    CHECK(p.port == 443);
    CHECK(p.kind == RequestKind::connect);
    CHECK(p.to_client == "HTTP/1.1 200 Connection established\r\n\r\n");
    CHECK(p.to_upstream.empty());
    CHECK(p.refusal.empty());
    CHECK(p.request_line == "CONNECT api.test:443");
}

TEST_CASE("connect plan: refusals carry a complete response naming the reason") {
    const ConnectPlan denied = plan("CONNECT evil.test:443 HTTP/1.1\r\n\r\n");
    CHECK_FALSE(denied.allowed());
    CHECK(denied.status == 403);
    CHECK(denied.refusal.starts_with("HTTP/1.1 403 Forbidden\r\n"));
    CHECK(denied.refusal.find("Connection: close\r\n") != std::string::npos);
    const std::string body = "forkvm egress: " + denied.reason + "\n";
    CHECK(denied.refusal.ends_with("\r\n\r\n" + body));
    CHECK(denied.refusal.find("Content-Length: " + std::to_string(body.size()) + "\r\n") !=
          std::string::npos);
    CHECK(denied.reason.find("evil.test") != std::string::npos);

    // A port the rule does not list.
    CHECK(plan("CONNECT api.test:22 HTTP/1.1\r\n\r\n").status == 403);
    // A rule with paths never allows a tunnel.
    CHECK(plan("CONNECT files.test:80 HTTP/1.1\r\n\r\n").status == 403);
}

TEST_CASE("connect plan: private addresses are refused however they are spelled") {
    for (const char* host : {"127.0.0.1", "0177.0.0.1", "2130706433", "0x7f.1", "[::1]", "[::ffff:127.0.0.1]",
                             "169.254.169.254", "10.1.2.3"}) {
        INFO(host);
        const ConnectPlan p = plan(std::string("CONNECT ") + host + ":443 HTTP/1.1\r\n\r\n");
        CHECK(p.status == 403);
        CHECK_FALSE(p.allowed());
    }
    // An IPv4-mapped literal of an allowed public address connects to the IPv4 itself.
    const ConnectPlan mapped = plan("CONNECT [::ffff:8.8.8.8]:443 HTTP/1.1\r\n\r\n");
    REQUIRE(mapped.allowed());
    CHECK(mapped.address->is_v4());
    CHECK(mapped.address->to_string() == "8.8.8.8");
}

TEST_CASE("connect plan: names resolve only through the hosts map, and each address is checked") {
    // Allowed by name, but every address is private: refused with the range.
    const ConnectPlan inside = plan("GET http://inside.test/ HTTP/1.1\r\n\r\n");
    CHECK(inside.status == 403);
    CHECK(inside.reason.find("inside.test resolves only to refused addresses: 127.0.0.1 is in 127.0.0.0/8") !=
          std::string::npos);
    // The first address is refused, the second is public: the second is used.
    const ConnectPlan split = plan("CONNECT split.test:443 HTTP/1.1\r\n\r\n");
    REQUIRE(split.allowed());
    CHECK(split.address->to_string() == "9.9.9.9");
    // Not in the map: 502, no DNS.
    Policy any = Policy::parse(nlohmann::json::parse(R"({"allow": [{"domain": "nowhere.test"}]})"));
    const ConnectPlan unknown = plan_connection("CONNECT nowhere.test:443 HTTP/1.1\r\n\r\n", any, hosts());
    CHECK(unknown.status == 502);
    CHECK(unknown.reason.find("not in the host's name table") != std::string::npos);
    // allow_private lets a named private address through.
    Policy priv = Policy::parse(
        nlohmann::json::parse(R"({"allow": [{"domain": "private.test"}], "allow_private": ["10.9.9.9"]})"));
    const ConnectPlan p = plan_connection("CONNECT private.test:443 HTTP/1.1\r\n\r\n", priv, hosts());
    REQUIRE(p.allowed());
    CHECK(p.address->to_string() == "10.9.9.9");
}

TEST_CASE("connect plan: plain HTTP is rewritten to origin-form with the URL's host and one request") {
    const ConnectPlan p = plan(
        "POST http://api.test/v1/upload?x=1 HTTP/1.1\r\n"
        "Host: evil.test\r\n"
        "Proxy-Authorization: Basic c2VjcmV0\r\n"
        "Proxy-Connection: keep-alive\r\n"
        "Connection: keep-alive, X-Private\r\n"
        "X-Private: do-not-forward\r\n"
        "Upgrade: websocket\r\n"
        "Content-Type: text/plain\r\n"
        "Content-Length: 5\r\n"
        "\r\n");
    REQUIRE(p.allowed());
    CHECK(p.kind == RequestKind::http);
    CHECK(p.to_client.empty());
    CHECK(p.body_bytes == 5);
    CHECK(p.request_line == "POST http://api.test:80/v1/upload?x=1");
    CHECK(p.to_upstream ==
          "POST /v1/upload?x=1 HTTP/1.1\r\n"
          "Host: api.test\r\n"
          "Content-Type: text/plain\r\n"
          "Content-Length: 5\r\n"
          "Connection: close\r\n\r\n");
}

TEST_CASE("connect plan: path rules, https:// URLs, chunked bodies and bad heads") {
    CHECK(plan("GET http://files.test/pub/a.txt HTTP/1.1\r\n\r\n").allowed());
    const ConnectPlan escaped = plan("GET http://files.test/pub/../etc/passwd HTTP/1.1\r\n\r\n");
    CHECK(escaped.status == 403);
    CHECK(plan("POST http://files.test/pub/a.txt HTTP/1.1\r\nContent-Length: 0\r\n\r\n").status == 403);

    const ConnectPlan https = plan("GET https://api.test/ HTTP/1.1\r\n\r\n");
    CHECK(https.status == 400);
    CHECK(https.reason.find("CONNECT") != std::string::npos);

    const ConnectPlan chunked = plan("POST http://api.test/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    CHECK(chunked.status == 411);

    CHECK(plan("GET / HTTP/1.1\r\n\r\n").status == 400);  // origin-form: not a proxy request
    CHECK(plan("GET http://api.test/ HTTP/2.0\r\n\r\n").status == 505);
    CHECK(plan("TRACE http://api.test/ HTTP/1.1\r\n\r\n").status == 405);
    const ConnectPlan garbage = plan("\x16\x03\x01 hello\r\n\r\n");
    CHECK(garbage.status == 400);
    CHECK(garbage.request_line.empty());
    CHECK(garbage.refusal.starts_with("HTTP/1.1 400 Bad Request\r\n"));
}

TEST_CASE("hosts map: entries, repeats and errors") {
    const HostsMap h =
        HostsMap::parse({"a.test=192.0.2.1", "a.test=2001:db8::1", "a.test=192.0.2.1", "b.test=8.8.8.8"});
    CHECK(h.size() == 2);
    REQUIRE(h.resolve("a.test").size() == 2);
    CHECK(h.resolve("a.test")[1].to_string() == "2001:db8::1");
    CHECK(h.resolve("c.test").empty());
    for (const char* bad :
         {"a.test", "A.test=1.2.3.4", "a.test=0177.0.0.1", "a.test=", "=1.2.3.4", "a_b.test=1.2.3.4"}) {
        INFO(bad);
        CHECK_THROWS_AS(HostsMap::parse({bad}), HostsMapError);
    }
}
