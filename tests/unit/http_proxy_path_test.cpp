#include <doctest/doctest.h>
#include <string>

#include "http_proxy/path.hpp"

using namespace forkvm::http_proxy;

namespace {

std::string norm(const std::string& target) {
    auto r = normalize_path(target);
    REQUIRE_MESSAGE(r, target << ": " << r.error);
    return *r.path;
}

}  // namespace

TEST_CASE("http_proxy: path normalization resolves dot segments and duplicate slashes") {
    CHECK(norm("/") == "/");
    CHECK(norm("/v1/x") == "/v1/x");
    CHECK(norm("/v1/../admin") == "/admin");
    CHECK(norm("/v1/./x") == "/v1/x");
    CHECK(norm("//v1//x//") == "/v1/x/");
    CHECK(norm("/v1/x/..") == "/v1/");
    CHECK(norm("/v1/x/.") == "/v1/x/");
    CHECK(norm("/v1/.hidden/..x") == "/v1/.hidden/..x");  // not dot segments
    CHECK(norm("/v1/x?a=/../b") == "/v1/x");              // query dropped
    CHECK(norm("/v1?") == "/v1");
}

TEST_CASE("http_proxy: path normalization decodes unreserved escapes only") {
    CHECK(norm("/%7Euser") == "/~user");
    CHECK(norm("/%41%62") == "/Ab");
    CHECK(norm("/v1/%2e%2e/admin") == "/admin");
    CHECK(norm("/v1/%2E./admin") == "/admin");
    CHECK(norm("/a%20b") == "/a%20b");
    CHECK(norm("/a%c3%a9") == "/a%C3%A9");  // kept, hex upper-cased
}

TEST_CASE("http_proxy: paths that cannot be normalized safely are refused") {
    for (const char* bad : {"",       "v1/x",   "?q",     "/..",     "/../x",         "/v1/../../x",
                            "/a%2fb", "/a%2Fb", "/a%5cb", "/a%00",   "/a%25",         "/a%252e%252e",
                            "/a%",    "/a%4",   "/a%zz",  "/a\\b",   "/v1/..;/admin", "/a;b=c",
                            "/a b",   "/a\tb",  "/a\x7f", "/a#frag", "/a\xc3\xa9",    "/a%0a",
                            "/a|b",   "/a\"b"}) {
        CHECK_MESSAGE(!normalize_path(bad), bad);
    }
    CHECK_FALSE(normalize_path("/" + std::string(kMaxPathLength, 'a')));
    CHECK(normalize_path("/" + std::string(kMaxPathLength - 1, 'a')));
}

TEST_CASE("http_proxy: path prefixes match whole segments") {
    CHECK(path_has_prefix("/v1", "/v1"));
    CHECK(path_has_prefix("/v1/x", "/v1"));
    CHECK_FALSE(path_has_prefix("/v1admin", "/v1"));
    CHECK(path_has_prefix("/v1/", "/v1/"));
    CHECK(path_has_prefix("/v1/x", "/v1/"));
    CHECK_FALSE(path_has_prefix("/v1", "/v1/"));
    CHECK(path_has_prefix("/anything", "/"));
    CHECK_FALSE(path_has_prefix("/admin", "/v1/"));
}
