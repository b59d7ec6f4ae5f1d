#include <doctest/doctest.h>

#include "pool/service_error.hpp"
#include "server/access_log.hpp"
#include "server/auth.hpp"
#include "server/encoding.hpp"
#include "server/json_output.hpp"
#include "server/metrics.hpp"
#include "server/query.hpp"
#include "server/request_decode.hpp"
#include "server/request_id.hpp"
#include "server/router.hpp"
#include "server/server_options.hpp"
#include "tests/support/service_errors.hpp"

using namespace forkvm::server;
using forkvm::pool::ServiceError;
using forkvm::test::field_of;

TEST_CASE("server: percent-decoding and query parsing") {
    CHECK(percent_decode("a%2Fb%20c+d", true) == "a/b c d");
    CHECK(percent_decode("a+b", false) == "a+b");
    CHECK_FALSE(percent_decode("%2", true));
    CHECK_FALSE(percent_decode("%zz", true));
    CHECK_FALSE(percent_decode("abc%", true));
    const auto q = Query::parse("path=%2Ftmp%2Fx&label=a%3D1&label=b=2&limit=5&flag=true");
    CHECK(q.get("path") == "/tmp/x");
    CHECK(q.all("label") == std::vector<std::string>{"a=1", "b=2"});
    CHECK(q.get_uint("limit", 1, 10) == 5U);
    CHECK(q.get_bool("flag") == true);
    CHECK(field_of([&] { (void)q.get("label"); }) == "label");  // twice
    CHECK(field_of([&] { (void)q.get_uint("limit", 6, 10); }) == "limit");
    CHECK(field_of([] { (void)Query::parse("path=%G0"); }) == "path");
    CHECK(field_of([] { (void)Query::parse("x=1&flag=maybe").get_bool("flag"); }) == "flag");
    CHECK_FALSE(parse_uint("-1"));
    CHECK_FALSE(parse_uint("99999999999999999999999"));
    CHECK(parse_uint("18446744073709551615") == 18446744073709551615ULL);
}

TEST_CASE("server: router matches every endpoint, 405 lists the allowed methods") {
    CHECK(route("GET", "/healthz").match->id == RouteId::healthz);
    const auto get = route("GET", "/v1/sandboxes/sb-1");
    REQUIRE(get.match);
    CHECK(get.match->id == RouteId::get_sandbox);
    CHECK(get.match->sandbox_id == "sb-1");
    CHECK(get.match->route_template == "/v1/sandboxes/{id}");
    CHECK(route("PUT", "/v1/sandboxes/x/files").match->id == RouteId::put_file);
    CHECK(route("GET", "/v1/sandboxes/x/files/stat").match->id == RouteId::stat_file);
    CHECK(route("POST", "/v1/sandboxes/x/files/move").match->id == RouteId::move);
    const auto wrong = route("PATCH", "/v1/sandboxes/x");
    CHECK_FALSE(wrong.match);
    CHECK(wrong.path_known);
    CHECK(wrong.allow == "GET, DELETE");
    const auto unknown = route("GET", "/v2/nothing");
    CHECK_FALSE(unknown.match);
    CHECK_FALSE(unknown.path_known);
    CHECK_FALSE(route("GET", "/v1/sandboxes//console").match);
    CHECK(route("GET", "/v1/sandboxes/a%2Db/console").match->sandbox_id == "a-b");
}

TEST_CASE("server: exec bodies are validated strictly, naming the field") {
    const DecodeLimits limits{4, 1000};
    const auto call =
        decode_exec(R"({"shell":"echo hi","env":{"A":"1"},"timeout_ms":5,"max_output_bytes":99999})", limits);
    CHECK(call.argv == std::vector<std::string>{"/bin/sh", "-c", "echo hi"});
    CHECK(call.max_output_bytes == 1000U);  // capped by config
    CHECK(call.timeout == std::chrono::milliseconds(5));
    CHECK(decode_exec(R"({"cmd":["ls"],"stdin_base64":"aGk="})", limits).stdin_data == "hi");
    CHECK(field_of([&] { decode_exec(R"({"cmd":["a"],"shell":"b"})", limits); }) == "cmd");
    CHECK(field_of([&] { decode_exec(R"({"env":{}})", limits); }) == "cmd");
    CHECK(field_of([&] { decode_exec(R"({"cmd":[]})", limits); }) == "cmd");
    CHECK(field_of([&] { decode_exec(R"({"cmd":"ls"})", limits); }) == "cmd");
    CHECK(field_of([&] { decode_exec(R"({"cmd":["ls"],"timeout_ms":0})", limits); }) == "timeout_ms");
    CHECK(field_of([&] { decode_exec(R"({"cmd":["ls"],"timeout_ms":1.5})", limits); }) == "timeout_ms");
    CHECK(field_of([&] { decode_exec(R"({"cmd":["ls"],"timeout_ms":"5"})", limits); }) == "timeout_ms");
    CHECK(field_of([&] { decode_exec(R"({"cmd":["ls"],"cmdd":1})", limits); }) == "cmdd");
    CHECK(field_of([&] { decode_exec(R"({"cmd":["ls"],"stdin":"a","stdin_base64":"YQ=="})", limits); }) ==
          "stdin_base64");
    CHECK(field_of([&] { decode_exec(R"({"cmd":["ls"],"stdin_base64":"!!"})", limits); }) == "stdin_base64");
    CHECK(field_of([&] { decode_exec(R"({"cmd":["ls"],"env":{"A=B":"1"}})", limits); }) == "env");
    CHECK(field_of([&] { decode_exec(R"({"cmd":["ls"],"cwd":"rel"})", limits); }) == "cwd");
    CHECK(field_of([&] { decode_exec(R"({"cmd":["ls"])", limits); }) == "body");
    CHECK(field_of([&] { decode_exec(R"([1])", limits); }) == "body");
    CHECK(field_of([&] { decode_exec(std::string(100, '[') + std::string(100, ']'), limits); }) == "body");
}

TEST_CASE("server: create, fork, mkdir, move and list inputs") {
    CHECK_FALSE(decode_create("").ttl);
    CHECK(decode_create(R"({"ttl_ms":1000,"labels":{"a":"b"}})").ttl == std::chrono::milliseconds(1000));
    CHECK(field_of([] { decode_create(R"({"ttl_ms":-1})"); }) == "ttl_ms");
    CHECK(field_of([] { decode_create(R"({"labels":{"a":1}})"); }) == "labels");
    CHECK(field_of([] { decode_create(R"({"user":5})"); }) == "user");
    // An egress policy is checked whole; an error names the field inside it.
    CHECK_FALSE(decode_create("{}").egress);
    const auto with_policy = decode_create(
        R"({"egress":{"allow":[{"domain":"*.pypi.org","ports":[443]}],"limits":{"max_connections":4}}})");
    REQUIRE(with_policy.egress);
    CHECK(with_policy.egress->allow().size() == 1U);
    CHECK(with_policy.egress->limits().max_connections == 4U);
    CHECK(decode_create(R"({"egress":{}})").egress == forkvm::http_proxy::Policy());
    CHECK(field_of([] { decode_create(R"({"egress":{"allow":[{"domain":"a.test","ports":[0]}]}})"); }) ==
          "egress.allow[0].ports[0]");
    CHECK(field_of([] { decode_create(R"({"egress":{"alow":[]}})"); }) == "egress.alow");
    CHECK(field_of([] { decode_create(R"({"egress":[1]})"); }) == "egress");
    CHECK(field_of([] {
              decode_create_template(R"({"name":"t","snapshot_id":"snap-1","egress":{"deny":"x"}})");
          }) == "egress.deny");
    CHECK(decode_create_template(R"({"name":"t","snapshot_id":"snap-1"})").egress ==
          forkvm::http_proxy::Policy());
    CHECK(decode_fork("{}", {4, 10}).count == 1U);
    CHECK(field_of([] { decode_fork(R"({"count":5})", {4, 10}); }) == "count");
    CHECK(field_of([] { decode_fork(R"({"count":0})", {4, 10}); }) == "count");
    const auto mk = decode_mkdir(R"({"path":"/a/b","parents":true,"mode":"0700"})");
    CHECK(mk.mode == 0700U);
    CHECK(mk.parents);
    CHECK(field_of([] { decode_mkdir(R"({"path":"/a","mode":"0999"})"); }) == "mode");
    CHECK(field_of([] { decode_mkdir(R"({"path":"a"})"); }) == "path");
    CHECK(field_of([] { decode_move(R"({"from":"/a"})"); }) == "to");
    const auto list = decode_list_query(Query::parse("label=a=1&label=b=&limit=3&page_token=t"));
    CHECK(list.label_filter == forkvm::pool::Labels{{"a", "1"}, {"b", ""}});
    CHECK(list.limit == 3U);
    CHECK(list.page_token == "t");
    CHECK(field_of([] { decode_list_query(Query::parse("label=nokey")); }) == "label");
    CHECK(field_of([] { decode_list_query(Query::parse("limit=0")); }) == "limit");
    CHECK(field_of([] { decode_list_query(Query::parse("limit=1001")); }) == "limit");
    CHECK(field_of([] { decode_list_query(Query::parse("sort=x")); }) == "sort");
    CHECK(field_of([] { decode_path_param(Query::parse("path=rel")); }) == "path");
    CHECK(field_of([] { decode_path_param(Query::parse("path=%2Fa%00b")); }) == "path");
    CHECK(field_of([] { decode_path_param(Query::parse("")); }) == "path");
    CHECK(decode_write_query(Query::parse("path=/x&mode=0600&parents=true")).mode == 0600U);
}

TEST_CASE("server: output encodings, times and modes") {
    CHECK(base64_encode("") == "");
    CHECK(base64_encode("f") == "Zg==");
    CHECK(base64_encode("fo") == "Zm8=");
    CHECK(base64_encode("foo") == "Zm9v");
    CHECK(base64_decode("Zm9vYg==") == "foob");
    CHECK_FALSE(base64_decode("Zm9=vYg="));
    CHECK_FALSE(base64_decode("Zm9"));
    CHECK(is_valid_utf8("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"));
    CHECK_FALSE(is_valid_utf8("\xff"));
    CHECK_FALSE(is_valid_utf8("\xc0\xaf"));      // overlong
    CHECK_FALSE(is_valid_utf8("\xed\xa0\x80"));  // surrogate
    CHECK_FALSE(is_valid_utf8("\xe2\x82"));      // truncated
    CHECK(format_time_ns(1'700'000'000'123'456'789) == "2023-11-14T22:13:20.123Z");
    CHECK(format_time_ns(-1) == "1969-12-31T23:59:59.999Z");
    CHECK(octal_mode(0644) == "0644");
    CHECK(octal_mode(04755) == "4755");
    Json out;
    put_output(out, "stdout", "enc", std::string("\x00\xff", 2));
    CHECK(out["enc"] == "base64");
    CHECK(out["stdout"] == "AP8=");
    forkvm::vmm::BufferedExecResult killed;
    killed.exit_code = -1;
    killed.term_signal = 9;
    const auto j = exec_result_json(killed);
    CHECK(j["exit_code"].is_null());
    CHECK(j["signal"] == 9);
}

TEST_CASE("server: auth owner ids, bearer parsing, request ids, redaction, listen") {
    const Authenticator auth({"k1", "k2"}, "");
    CHECK(auth.owner_for("Bearer k1") == owner_id_of("k1"));
    CHECK(auth.owner_for("bearer  k2 ") == owner_id_of("k2"));
    CHECK_FALSE(auth.owner_for("Bearer k3"));
    CHECK_FALSE(auth.owner_for("Basic k1"));
    CHECK_FALSE(auth.owner_for(""));
    CHECK(owner_id_of("k1").size() == 16U);
    CHECK(owner_id_of("k1") != owner_id_of("k2"));
    CHECK(auth.metrics_allowed(""));
    CHECK_FALSE(Authenticator({"k1"}, "adm").metrics_allowed("Bearer k1"));
    CHECK(Authenticator({"k1"}, "adm").metrics_allowed("Bearer adm"));
    CHECK(request_id_for("abc-1.2_3") == "abc-1.2_3");
    CHECK(request_id_for("bad id").starts_with("req-"));
    CHECK(request_id_for(std::string(65, 'a')).starts_with("req-"));
    CHECK(request_id_for("") != request_id_for(""));
    CHECK(redact_target("/x?path=/a&api_key=s3cret&token=t") == "/x?path=/a&api_key=***&token=***");
    CHECK(redact_target("/x\n") == "/x?");
    CHECK(parse_listen("127.0.0.1:0") == std::pair<std::string, std::uint16_t>{"127.0.0.1", 0});
    CHECK(parse_listen("[::1]:8080").first == "::1");
    CHECK(parse_listen(":9000").first == "0.0.0.0");
    CHECK(field_of([] { parse_listen("localhost"); }) == "server.listen");
    CHECK(field_of([] { parse_listen("a:70000"); }) == "server.listen");
    forkvm::config::Config config;
    config.server.listen = "127.0.0.1:0";
    config.server.threads = 3;
    config.server.max_body_bytes = 77;
    config.auth.api_keys = {"k"};
    config.sandbox.max_fork_count = 7;
    const auto options = server_options_from(config);
    CHECK(options.io_threads == 3U);
    CHECK(options.max_body_bytes == 77U);
    CHECK(options.max_fork_count == 7U);
    CHECK(options.api_keys == std::vector<std::string>{"k"});
    CHECK(options.tls_cert.empty());
    config.server.tls_cert = "/etc/cert.pem";
    config.server.tls_key = "/etc/key.pem";
    const auto tls_options = server_options_from(config);
    CHECK(tls_options.tls_cert == "/etc/cert.pem");
    CHECK(tls_options.tls_key == "/etc/key.pem");
}

TEST_CASE("server: metrics label unknown methods 'other' so clients cannot grow them") {
    forkvm::server::ServerMetrics metrics;
    for (int i = 0; i < 50; ++i) metrics.record_request("X" + std::to_string(i), "unmatched", 404);
    metrics.record_request("GET", "/healthz", 200);
    const std::string text = metrics.render({});
    CHECK(text.find("method=\"other\",route=\"unmatched\",status=\"404\"} 50") != std::string::npos);
    CHECK(text.find("method=\"GET\",route=\"/healthz\"") != std::string::npos);
    CHECK(text.find("X1") == std::string::npos);
}

TEST_CASE("server: metrics count egress decisions and bytes") {
    forkvm::pool::ServiceStats stats;
    stats.egress = {3, 2, 1, 100, 2000};
    const std::string text = forkvm::server::ServerMetrics().render(stats);
    CHECK(text.find("forkvm_egress_decisions_total{decision=\"allowed\"} 3\n") != std::string::npos);
    CHECK(text.find("forkvm_egress_decisions_total{decision=\"denied\"} 2\n") != std::string::npos);
    CHECK(text.find("forkvm_egress_decisions_total{decision=\"refused\"} 1\n") != std::string::npos);
    CHECK(text.find("forkvm_egress_bytes_total{direction=\"upstream\"} 100\n") != std::string::npos);
    CHECK(text.find("forkvm_egress_bytes_total{direction=\"guest\"} 2000\n") != std::string::npos);
}
