#include <doctest/doctest.h>
#include <string>

#include "http_proxy/request.hpp"

using namespace forkvm::http_proxy;

namespace {

ProxyRequest ok(const std::string& head) {
    auto r = parse_proxy_request(head);
    REQUIRE_MESSAGE(r, head << " -> " << r.message);
    return *r.request;
}

RequestError err(const std::string& head, const RequestLimits& limits = {}) {
    auto r = parse_proxy_request(head, limits);
    CHECK_MESSAGE(!r, head);
    CHECK_MESSAGE(!r.message.empty(), head);
    return r.error;
}

}  // namespace

TEST_CASE("http_proxy: CONNECT in authority-form") {
    auto r = ok("CONNECT files.pypi.org:443 HTTP/1.1\r\nHost: files.pypi.org:443\r\n\r\n");
    CHECK(r.kind == RequestKind::connect);
    CHECK(r.method == "CONNECT");
    CHECK(r.host.name == "files.pypi.org");
    CHECK(r.port == 443);
    CHECK(r.target.empty());
    CHECK(r.minor_version == 1);
    REQUIRE(r.header("host"));
    CHECK(r.header("HOST")->value == "files.pypi.org:443");

    auto v6 = ok("CONNECT [2001:db8::1]:8443 HTTP/1.0\r\n\r\n");
    CHECK(v6.host.is_ip());
    CHECK(v6.host.ip.to_string() == "2001:db8::1");
    CHECK(v6.port == 8443);
    CHECK(v6.minor_version == 0);

    auto octal = ok("CONNECT 0177.1:22 HTTP/1.1\r\n\r\n");
    CHECK(octal.host.ip == IpAddress::v4(0x7f000001));

    CHECK(err("CONNECT example.com HTTP/1.1\r\n\r\n") == RequestError::bad_request);  // no port
    CHECK(err("CONNECT example.com:0 HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("CONNECT example.com:65536 HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("CONNECT example.com:+443 HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("CONNECT example.com: HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("CONNECT example.com:443/ HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("CONNECT http://example.com:443 HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("CONNECT user@example.com:443 HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("CONNECT 2001:db8::1:443 HTTP/1.1\r\n\r\n") == RequestError::bad_request);  // v6 needs brackets
    CHECK(err("CONNECT [fe80::1%25eth0]:443 HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("CONNECT a.com:443 HTTP/1.1\r\nContent-Length: 5\r\n\r\n") == RequestError::bad_request);
}

TEST_CASE("http_proxy: absolute-form http requests") {
    auto r = ok("GET http://Example.COM/a/b?q=1&r=%20 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n");
    CHECK(r.kind == RequestKind::http);
    CHECK(r.method == "GET");
    CHECK(r.host.name == "example.com");
    CHECK(r.port == 80);
    CHECK(r.target == "/a/b?q=1&r=%20");
    CHECK(r.headers.size() == 2);

    CHECK(ok("HEAD http://example.com:8080 HTTP/1.1\r\n\r\n").target == "/");
    CHECK(ok("HEAD http://example.com:8080 HTTP/1.1\r\n\r\n").port == 8080);
    CHECK(ok("GET HTTP://example.com?x HTTP/1.1\r\n\r\n").target == "/?x");
    CHECK(ok("GET http://[::1]:80/ HTTP/1.1\r\n\r\n").host.ip.to_string() == "::1");

    auto post = ok("POST http://a.test/x HTTP/1.1\r\nContent-Length: 12\r\nContent-Length: 12\r\n\r\n");
    CHECK(post.content_length == 12u);
    CHECK_FALSE(post.chunked);
    auto chunked = ok("PUT http://a.test/x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n");
    CHECK(chunked.chunked);
    CHECK_FALSE(chunked.content_length);
}

TEST_CASE("http_proxy: https in absolute-form (busybox wget) is a distinct kind") {
    auto r = ok("GET https://files.pypi.org/simple/ HTTP/1.1\r\nHost: files.pypi.org\r\n\r\n");
    CHECK(r.kind == RequestKind::https_absolute);
    CHECK(r.port == 443);
    CHECK(r.host.name == "files.pypi.org");
    CHECK(r.target == "/simple/");
}

TEST_CASE("http_proxy: malformed requests get typed errors") {
    // Origin-form and asterisk-form are not proxy requests.
    CHECK(err("GET /path HTTP/1.1\r\nHost: a.com\r\n\r\n") == RequestError::bad_request);
    CHECK(err("OPTIONS * HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET ftp://a.com/ HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET a.com/ HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    // Userinfo, bad hosts and ports.
    CHECK(err("GET http://user:pw@a.com/ HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com@evil.com/ HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http:///x HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com:0/ HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com:99999/ HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com:80:80/ HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://1.2.3.4.5/ HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://[::1/ HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com/#frag HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com/a\"b HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com/\xc3\xa9 HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    // Methods: not a token is 400, not forwarded is 405.
    CHECK(err("TRACE http://a.com/ HTTP/1.1\r\n\r\n") == RequestError::method_not_allowed);
    CHECK(err("get http://a.com/ HTTP/1.1\r\n\r\n") == RequestError::method_not_allowed);
    CHECK(err("G(T http://a.com/ HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    // Versions.
    CHECK(err("GET http://a.com/ HTTP/2.0\r\n\r\n") == RequestError::version_not_supported);
    CHECK(err("GET http://a.com/ HTTP/1.1x\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com/ http/1.1\r\n\r\n") == RequestError::bad_request);
    // Whitespace and control-character tricks.
    CHECK(err("GET  http://a.com/ HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com/  HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err(" GET http://a.com/ HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com/ HTTP/1.1 \r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET\thttp://a.com/ HTTP/1.1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com/ HTTP/1.1\n\r\n") == RequestError::bad_request);  // bare LF
    CHECK(err("GET http://a.com/ HTTP/1.1\r\nA: b\nC: d\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com/ HTTP/1.1\r\nA: b\rC: d\r\n\r\n") == RequestError::bad_request);
    CHECK(err(std::string("GET http://a.com/\0x HTTP/1.1\r\n\r\n", 31)) == RequestError::bad_request);
    CHECK(err(std::string("GET http://a.com/ HTTP/1.1\r\nA: b\0c\r\n\r\n", 37)) == RequestError::bad_request);
    CHECK(err("GET http://a.com/ HTTP/1.1\r\nA : b\r\n\r\n") ==
          RequestError::bad_request);  // space before colon
    CHECK(err("GET http://a.com/ HTTP/1.1\r\nA: b\r\n folded\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com/ HTTP/1.1\r\nNoColon\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com/ HTTP/1.1\r\n: empty-name\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com/ HTTP/1.1\r\nA: \x01\r\n\r\n") == RequestError::bad_request);
    // Framing / smuggling.
    CHECK(err("POST http://a.com/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n") ==
          RequestError::bad_request);
    CHECK(err("POST http://a.com/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("POST http://a.com/ HTTP/1.1\r\nContent-Length: 1,1\r\n\r\n") == RequestError::bad_request);
    CHECK(err("POST http://a.com/ HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n") ==
          RequestError::bad_request);
    CHECK(err("POST http://a.com/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n") ==
          RequestError::bad_request);
    CHECK(err("POST http://a.com/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") ==
          RequestError::bad_request);
    CHECK(err("POST http://a.com/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
              "chunked\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com/ HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n") ==
          RequestError::bad_request);
    // Structure.
    CHECK(err("") == RequestError::bad_request);
    CHECK(err("\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com/ HTTP/1.1\r\n") == RequestError::bad_request);  // incomplete head
    CHECK(err("GET http://a.com/ HTTP/1.1\r\n\r\n\r\n") == RequestError::bad_request);
    CHECK(err("GET http://a.com/ HTTP/1.1\r\n\r\nbody\r\n\r\n") == RequestError::bad_request);
    CHECK(http_status(RequestError::bad_request) == 400);
    CHECK(http_status(RequestError::method_not_allowed) == 405);
    CHECK(http_status(RequestError::uri_too_long) == 414);
    CHECK(http_status(RequestError::header_too_large) == 431);
    CHECK(http_status(RequestError::version_not_supported) == 505);
}

TEST_CASE("http_proxy: request size limits map to 414 and 431") {
    RequestLimits limits;
    limits.max_request_line = 64;
    limits.max_header_line = 32;
    limits.max_headers = 2;
    limits.max_head = 256;
    CHECK(err("GET http://a.com/" + std::string(60, 'a') + " HTTP/1.1\r\n\r\n", limits) ==
          RequestError::uri_too_long);
    CHECK(err("GET http://a.com/ HTTP/1.1\r\nX: " + std::string(40, 'a') + "\r\n\r\n", limits) ==
          RequestError::header_too_large);
    CHECK(err("GET http://a.com/ HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits) ==
          RequestError::header_too_large);
    CHECK(parse_proxy_request("GET http://a.com/ HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n", limits));
    std::string big = "GET http://a.com/ HTTP/1.1\r\n";
    while (big.size() < 300) big += "A: 1\r\n";
    CHECK(err(big + "\r\n", limits) == RequestError::header_too_large);
}

TEST_CASE("http_proxy: find_head_end bounds how much is read") {
    RequestLimits limits;
    limits.max_request_line = 32;
    limits.max_head = 128;
    CHECK(find_head_end("GET http://a.com/ HTTP/1.1\r\n", limits).status == HeadStatus::incomplete);
    const std::string head = "GET http://a.com/ HTTP/1.1\r\n\r\n";
    auto scan = find_head_end(head + "body", limits);
    CHECK(scan.status == HeadStatus::complete);
    CHECK(scan.length == head.size());
    CHECK(find_head_end("GET http://a.com/" + std::string(40, 'a'), limits).status ==
          HeadStatus::request_line_too_long);
    std::string many = "GET http://a.com/ HTTP/1.1\r\n";
    while (many.size() < 200) many += "A: 1\r\n";
    CHECK(find_head_end(many, limits).status == HeadStatus::too_large);
    CHECK(find_head_end("", limits).status == HeadStatus::incomplete);
}
