#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <string>

#include "http_proxy/policy.hpp"

using namespace forkvm::http_proxy;
using json = nlohmann::json;

namespace {

Policy policy(const char* text) { return Policy::parse(json::parse(text)); }

// The PolicyError message for a document that must not parse.
std::string error_of(const char* text) {
    try {
        Policy::parse(json::parse(text));
    } catch (const PolicyError& e) {
        return e.what();
    }
    FAIL("policy parsed: " << text);
    return {};
}

const char* kExample = R"({
  "allow": [
    {"domain": "example.com"},
    {"domain": "*.pypi.org", "ports": [443]},
    {"domain": "api.test", "ports": [80], "methods": ["GET", "HEAD"], "paths": ["/v1/"]},
    {"ip": "203.0.114.7", "ports": [8080]},
    {"ip": "10.1.2.3", "ports": [80]},
    {"domain": "*.corp.test"}
  ],
  "deny": [{"domain": "bad.corp.test"}, {"domain": "api.test", "methods": ["POST"]}],
  "allow_private": ["10.1.2.3"],
  "limits": {"max_connections": 4, "max_bytes": 1048576, "idle_timeout_ms": 1000, "total_timeout_ms": 60000}
})";

}  // namespace

TEST_CASE("http_proxy: the empty policy denies everything") {
    Policy p;
    CHECK_FALSE(p.decide_connect("example.com", 443).allowed);
    CHECK_FALSE(p.decide_request("GET", "example.com", 80, "/").allowed);
    CHECK(p.decide_connect("example.com", 443).reason == "example.com:443 denied: no allow rule matches");
    CHECK(Policy::parse(json::object()) == p);
    CHECK(p.limits().max_connections == 16);
}

TEST_CASE("http_proxy: exact domains, suffix rules and default ports") {
    auto p = policy(kExample);
    CHECK(p.decide_connect("example.com", 443).allowed);
    CHECK(p.decide_connect("EXAMPLE.com.", 80).allowed);            // case-insensitive, trailing dot
    CHECK_FALSE(p.decide_connect("example.com", 8443).allowed);     // default ports are 80 and 443
    CHECK_FALSE(p.decide_connect("www.example.com", 443).allowed);  // exact means exact
    CHECK_FALSE(p.decide_connect("notexample.com", 443).allowed);

    CHECK(p.decide_connect("files.pypi.org", 443).allowed);
    CHECK(p.decide_connect("a.b.pypi.org", 443).allowed);
    CHECK_FALSE(p.decide_connect("pypi.org", 443).allowed);  // subdomains only
    CHECK_FALSE(p.decide_connect("evilpypi.org", 443).allowed);
    CHECK_FALSE(p.decide_connect("files.pypi.org", 80).allowed);  // ports [443]
    CHECK_FALSE(p.decide_connect("files.pypi.org.evil.com", 443).allowed);
    CHECK(p.decide_connect("files.pypi.org", 443).reason ==
          "files.pypi.org:443 allowed by allow[1] (*.pypi.org)");
}

TEST_CASE("http_proxy: deny rules win over allow rules") {
    auto p = policy(kExample);
    CHECK(p.decide_connect("good.corp.test", 443).allowed);
    auto d = p.decide_connect("bad.corp.test", 443);
    CHECK_FALSE(d.allowed);
    CHECK(d.reason == "bad.corp.test:443 denied by deny[0] (bad.corp.test)");
    CHECK_FALSE(p.decide_request("GET", "BAD.corp.test", 80, "/").allowed);

    // A deny rule without ports denies every port, whatever port an allow rule opens.
    auto any_port = policy(
        R"({"allow": [{"domain": "*.corp.test", "ports": [8080]}], "deny": [{"domain": "bad.corp.test"}]})");
    CHECK(any_port.decide_connect("good.corp.test", 8080).allowed);
    CHECK_FALSE(any_port.decide_connect("bad.corp.test", 8080).allowed);
    CHECK_FALSE(any_port.decide_request("GET", "bad.corp.test", 8080, "/").allowed);
    CHECK(any_port.deny()[0].ports.empty());
    CHECK_FALSE(any_port.to_json()["deny"][0].contains("ports"));
    CHECK(any_port.to_json()["allow"][0]["ports"] == nlohmann::json::array({8080}));
    CHECK(forkvm::http_proxy::Policy::parse(any_port.to_json()) == any_port);
    // An allow rule without ports still means 80 and 443 only.
    CHECK(policy(R"({"allow": [{"domain": "a.test"}]})").allow()[0].ports ==
          std::vector<std::uint16_t>{80, 443});
}

TEST_CASE("http_proxy: methods and paths apply to plain HTTP only") {
    auto p = policy(kExample);
    CHECK(p.decide_request("GET", "api.test", 80, "/v1/items?x=1").allowed);
    CHECK(p.decide_request("HEAD", "api.test", 80, "/v1/").allowed);
    CHECK_FALSE(p.decide_request("PUT", "api.test", 80, "/v1/items").allowed);
    CHECK_FALSE(p.decide_request("POST", "api.test", 80, "/v1/items").allowed);  // also denied by deny[1]
    CHECK(p.decide_request("POST", "api.test", 80, "/v1/items").reason.find("deny[1]") != std::string::npos);
    CHECK_FALSE(p.decide_request("GET", "api.test", 80, "/v1").allowed);  // "/v1/" needs the slash
    CHECK_FALSE(p.decide_request("GET", "api.test", 80, "/v2/items").allowed);
    CHECK_FALSE(p.decide_request("GET", "api.test", 443, "/v1/items").allowed);  // ports [80]

    // A rule restricting methods/paths cannot allow a tunnel...
    auto r = policy(R"({"allow": [{"domain": "api.test", "methods": ["GET"]}]})");
    CHECK(r.decide_request("GET", "api.test", 443, "/").allowed);
    auto tunnel = r.decide_connect("api.test", 443);
    CHECK_FALSE(tunnel.allowed);
    CHECK(
        tunnel.reason ==
        "api.test:443 denied: allow[0] (api.test) restricts methods/paths, which cannot be checked inside a "
        "CONNECT tunnel");
    // In kExample, deny[1] (POST only) also denies the api.test tunnel.
    CHECK(p.decide_connect("api.test", 80).reason.find("deny[1]") != std::string::npos);
    // ...and a restricted deny rule still denies one.
    auto q =
        policy(R"({"allow": [{"domain": "x.test"}], "deny": [{"domain": "x.test", "paths": ["/admin"]}]})");
    CHECK_FALSE(q.decide_connect("x.test", 443).allowed);
    CHECK(q.decide_request("GET", "x.test", 80, "/public").allowed);
    CHECK_FALSE(q.decide_request("GET", "x.test", 80, "/admin/users").allowed);
    CHECK_FALSE(q.decide_request("GET", "x.test", 80, "/public/../admin").allowed);
}

TEST_CASE("http_proxy: path traversal cannot escape a path rule") {
    auto p = policy(kExample);
    for (const char* target : {"/v1/../admin", "/v1/%2e%2e/admin", "/v1/%2E%2E/admin", "/v1/..%2fadmin",
                               "/v1/..;/admin", "/v1/x/../../admin", "//v1/../admin", "/v1/..\\admin",
                               "/v1%2f..%2fadmin", "/v1/%252e%252e/admin", "/v1/../../../etc/passwd"}) {
        CHECK_MESSAGE(!p.decide_request("GET", "api.test", 80, target).allowed, target);
    }
    CHECK(p.decide_request("GET", "api.test", 80, "/x/../v1/ok").allowed);
    CHECK(p.decide_request("GET", "api.test", 80, "//v1//ok").allowed);
}

TEST_CASE("http_proxy: IP-literal rules and the address check") {
    auto p = policy(kExample);
    CHECK(p.decide_connect("203.0.114.7", 8080).allowed);
    CHECK(p.decide_connect("[::ffff:203.0.114.7]", 8080).allowed);  // mapped matches as IPv4
    CHECK_FALSE(p.decide_connect("203.0.114.8", 8080).allowed);
    CHECK(p.decide_connect("10.1.2.3", 80).allowed);   // in allow_private
    CHECK(p.decide_connect("012.1.2.3", 80).allowed);  // same address, octal
    // A domain rule never matches an IP literal.
    CHECK_FALSE(p.decide_connect("93.184.215.14", 443).allowed);

    CHECK_FALSE(check_address(IpAddress::v4(0x7f000001), p).allowed);
    CHECK(check_address(IpAddress::v4(0x7f000001), p).reason ==
          "127.0.0.1 is in 127.0.0.0/8 loopback (refused; not in allow_private)");
    CHECK(check_address(IpAddress::v4(0x0a010203), p).allowed);
    CHECK_FALSE(check_address(IpAddress::v4(0x0a010204), p).allowed);
    CHECK(check_address(IpAddress::v4(0x08080808), p).allowed);
    CHECK(check_address(*IpAddress::parse_strict("::ffff:10.1.2.3"), p).allowed);

    // A rule allowing a whole range still cannot reach private addresses in it.
    auto wide = policy(R"({"allow": [{"ip": "0.0.0.0/0"}]})");
    CHECK(wide.decide_connect("8.8.8.8", 443).allowed);
    auto metadata = wide.decide_connect("169.254.169.254", 80);
    CHECK_FALSE(metadata.allowed);
    CHECK(metadata.reason.find("169.254.0.0/16 link-local (cloud metadata)") != std::string::npos);
    CHECK_FALSE(wide.decide_connect("0x7f.1", 80).allowed);

    auto ranged = policy(R"({"allow": [{"ip": "10.0.0.0/8"}], "allow_private": ["10.2.0.0/16"]})");
    CHECK(ranged.decide_connect("10.2.3.4", 80).allowed);
    CHECK_FALSE(ranged.decide_connect("10.3.3.4", 80).allowed);
}

TEST_CASE("http_proxy: decisions on invalid input are denials, not crashes") {
    auto p = policy(kExample);
    CHECK_FALSE(p.decide_connect("", 443).allowed);
    CHECK_FALSE(p.decide_connect("example.com", 0).allowed);
    CHECK_FALSE(p.decide_connect("fe80::1%eth0", 443).allowed);
    CHECK(p.decide_connect("1.2.3.4.5", 443).reason.find("invalid host") == 0);
    CHECK_FALSE(p.decide_request("TRACE", "example.com", 80, "/").allowed);
    CHECK_FALSE(p.decide_request("get", "example.com", 80, "/").allowed);
    CHECK_FALSE(p.decide_request("GET", "example.com", 80, "no-slash").allowed);
}

TEST_CASE("http_proxy: to_json round-trips") {
    auto p = policy(kExample);
    auto j = p.to_json();
    CHECK(Policy::parse(j) == p);
    CHECK(j["allow"][0]["ports"] == json::array({80, 443}));
    CHECK(j["allow"][1]["domain"] == "*.pypi.org");
    CHECK_FALSE(j["allow"][0].contains("methods"));
    CHECK(j["allow_private"][0] == "10.1.2.3");
    CHECK(j["limits"]["max_bytes"] == 1048576);
    CHECK(Policy::parse(Policy().to_json()) == Policy());
    auto upper = policy(R"({"allow": [{"domain": "*.PyPI.org"}, {"ip": "2001:DB8:0::0/32"}],
                            "allow_private": ["2001:db8::/32"]})");
    CHECK(upper.to_json()["allow"][0]["domain"] == "*.pypi.org");
    CHECK(upper.to_json()["allow"][1]["ip"] == "2001:db8::/32");
    CHECK(Policy::parse(upper.to_json()) == upper);
}

TEST_CASE("http_proxy: policy validation errors name the field") {
    CHECK(error_of(R"([])") == "policy must be a JSON object");
    CHECK(error_of(R"({"alow": []})") == "alow: unknown key");
    CHECK(error_of(R"({"allow": {}})") == "allow: must be an array");
    CHECK(error_of(R"({"allow": [1]})") == "allow[0]: must be an object");
    CHECK(error_of(R"({"allow": [{}]})") == "allow[0]: needs exactly one of \"domain\" or \"ip\"");
    CHECK(error_of(R"({"allow": [{"domain": "a.com", "ip": "8.8.8.8"}]})") ==
          "allow[0]: needs exactly one of \"domain\" or \"ip\"");
    CHECK(error_of(R"({"allow": [{"domain": "a.com", "port": [1]}]})") == "allow[0].port: unknown key");
    CHECK(
        error_of(
            R"({"allow": [{"domain": "a.com"}, {"domain": "a.com"}, {"domain": "b.com", "ports": [443, 0]}]})") ==
        "allow[2].ports[1]: must be an integer in 1..65535");
    CHECK(error_of(R"({"allow": [{"domain": "a.com", "ports": [65536]}]})") ==
          "allow[0].ports[0]: must be an integer in 1..65535");
    CHECK(error_of(R"({"allow": [{"domain": "a.com", "ports": ["443"]}]})") ==
          "allow[0].ports[0]: must be an integer in 1..65535");
    CHECK(error_of(R"({"allow": [{"domain": "a.com", "ports": [443.0]}]})") ==
          "allow[0].ports[0]: must be an integer in 1..65535");
    CHECK(error_of(R"({"allow": [{"domain": "a.com", "ports": [-1]}]})") ==
          "allow[0].ports[0]: must be an integer in 1..65535");
    CHECK(error_of(R"({"allow": [{"domain": "a.com", "ports": [443, 443]}]})") ==
          "allow[0].ports[1]: duplicate port");
    CHECK(error_of(R"({"allow": [{"domain": "a.com", "ports": []}]})")
              .find("allow[0].ports: must not be empty") == 0);
    CHECK(error_of(R"({"allow": [{"domain": "a_b.com"}]})").find("allow[0].domain: invalid domain name") ==
          0);
    CHECK(error_of(R"({"allow": [{"domain": "*"}]})").find("allow[0].domain:") == 0);
    CHECK(error_of(R"({"allow": [{"domain": "*.*.a.com"}]})").find("allow[0].domain:") == 0);
    CHECK(error_of(R"({"allow": [{"domain": "a.com."}]})") == "allow[0].domain: must not end with '.'");
    CHECK(error_of(R"({"allow": [{"domain": "8.8.8.8"}]})") ==
          "allow[0].domain: is an IP address; use \"ip\" for addresses");
    CHECK(error_of(R"({"allow": [{"ip": "8.8.8"}]})").find("allow[0].ip: must be an IPv4 dotted quad") == 0);
    CHECK(
        error_of(R"({"allow": [{"ip": "127.0.0.1"}]})") ==
        "allow[0].ip: 127.0.0.1 is in 127.0.0.0/8 loopback (refused; not in allow_private); also list it in "
        "allow_private to permit it");
    CHECK(error_of(R"({"allow": [{"ip": "::ffff:8.8.8.8"}]})") ==
          "allow[0].ip: write IPv4-mapped addresses as plain IPv4");
    CHECK(error_of(R"({"allow": [{"domain": "a.com", "methods": ["get"]}]})") ==
          "allow[0].methods[0]: must be one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS");
    CHECK(error_of(R"({"allow": [{"domain": "a.com", "methods": ["CONNECT"]}]})")
              .find("allow[0].methods[0]:") == 0);
    CHECK(error_of(R"({"allow": [{"domain": "a.com", "paths": ["v1"]}]})") ==
          "allow[0].paths[0]: path must start with '/'");
    CHECK(error_of(R"({"allow": [{"domain": "a.com", "paths": ["/v1/../admin"]}]})") ==
          "allow[0].paths[0]: must be normalized (did you mean \"/admin\"?)");
    CHECK(error_of(R"({"allow": [{"domain": "a.com", "paths": ["/v1?x"]}]})")
              .find("allow[0].paths[0]: must not") == 0);
    CHECK(error_of(R"({"deny": [{"domain": "a.com", "paths": ["/a", "/a"]}]})") ==
          "deny[0].paths[1]: duplicate path");
    CHECK(error_of(R"({"allow_private": ["10.0.0.1/8"]})") ==
          "allow_private[0]: address has bits set beyond the prefix length");
    CHECK(error_of(R"({"allow_private": "10.0.0.1"})") == "allow_private: must be an array");
    CHECK(error_of(R"({"limits": {"max_connections": 0}})") ==
          "limits.max_connections: must be an integer in 1..1024");
    CHECK(error_of(R"({"limits": {"max_bytes": 0}})") ==
          "limits.max_bytes: must be an integer in 1..1099511627776");
    CHECK(error_of(R"({"limits": {"idle_timeout_ms": 99}})") ==
          "limits.idle_timeout_ms: must be an integer in 100..3600000");
    CHECK(error_of(R"({"limits": {"idle_timeout_ms": 5000, "total_timeout_ms": 1000}})") ==
          "limits.idle_timeout_ms: must not exceed total_timeout_ms");
    CHECK(error_of(R"({"limits": {"timeout": 1}})") == "limits.timeout: unknown key");
    CHECK(error_of(R"({"limits": []})") == "limits: must be an object");

    std::string many = R"({"allow": [)";
    for (std::size_t i = 0; i <= kMaxRules; ++i) many += std::string(i ? "," : "") + R"({"domain": "a.com"})";
    many += "]}";
    CHECK(error_of(many.c_str()) == "allow: at most 256 entries");

    try {
        Policy::parse(json::parse(R"({"allow": [{"domain": "a.com", "ports": [0]}]})"));
        FAIL("parsed");
    } catch (const PolicyError& e) {
        CHECK(e.path() == "allow[0].ports[0]");
    }
}
