// HTTPS: the server with a certificate speaks TLS only, verifiably, and
// refuses plain HTTP, bad handshakes and old protocol versions cleanly.
#include <unistd.h>

#include <boost/asio/ssl.hpp>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <openssl/ssl.h>

#include "server/tls_context.hpp"
#include "tests/support/service_errors.hpp"
#include "tests/support/test_pki.hpp"
#include "tests/unit/server_test_support.hpp"

using namespace forkvm::server;
using namespace forkvm::server::test;
using forkvm::test::field_of;
namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace http = boost::beast::http;

namespace {

struct TlsFiles {
    std::filesystem::path dir;
    std::string ca;
    std::string cert_file;
    std::string key_file;

    TlsFiles() {
        char pattern[] = "/tmp/forkvm_tls_test_XXXXXX";
        dir = ::mkdtemp(pattern);
        forkvm::test::TestPki pki;
        const auto pem = pki.issue({"localhost"}, {"127.0.0.1"});
        ca = pki.ca_pem();
        cert_file = write("cert.pem", pem.cert);
        key_file = write("key.pem", pem.key);
    }
    ~TlsFiles() { std::filesystem::remove_all(dir); }
    std::string write(const std::string& name, const std::string& text) const {
        const auto path = dir / name;
        std::ofstream(path) << text;
        return path.string();
    }
};

ServerOptions tls_options(const TlsFiles& files) {
    auto options = test_options();
    options.tls_cert = files.cert_file;
    options.tls_key = files.key_file;
    return options;
}

// A verifying HTTPS client on one connection.
class TlsClient {
public:
    TlsClient(std::uint16_t port, const std::string& ca_pem, const std::string& host_name,
              int max_version = 0)
        : context_(ssl::context::tls_client), stream_(ioc_, context_) {
        context_.add_certificate_authority(asio::buffer(ca_pem));
        // The stream's SSL object copied the context's settings when it was
        // made: set verification and versions on the stream itself.
        stream_.set_verify_mode(ssl::verify_peer);
        if (max_version != 0) {
            SSL_set_min_proto_version(stream_.native_handle(), max_version);
            SSL_set_max_proto_version(stream_.native_handle(), max_version);
        }
        stream_.set_verify_callback(ssl::host_name_verification(host_name));
        stream_.next_layer().connect({asio::ip::make_address("127.0.0.1"), port});
    }
    boost::system::error_code handshake() {
        boost::system::error_code ec;
        stream_.handshake(ssl::stream_base::client, ec);
        return ec;
    }
    Reply request(const std::string& method, const std::string& target, const std::string& body = "") {
        http::request<http::string_body> req(http::string_to_verb(method), target, 11);
        req.set(http::field::host, "localhost");
        req.set(http::field::authorization, "Bearer " + key_a);
        if (!body.empty()) req.set(http::field::content_type, "application/json");
        req.body() = body;
        req.prepare_payload();
        http::write(stream_, req);
        http::response<http::string_body> res;
        http::read(stream_, buffer_, res);
        Reply reply;
        reply.status = static_cast<int>(res.result_int());
        reply.body = res.body();
        return reply;
    }

private:
    asio::io_context ioc_;
    ssl::context context_;
    ssl::stream<asio::ip::tcp::socket> stream_;
    boost::beast::flat_buffer buffer_;
};

}  // namespace

TEST_CASE("server tls: a verifying HTTPS client is served, several requests per connection") {
    const TlsFiles files;
    Fixture f(tls_options(files));
    TlsClient client(f.port(), files.ca, "localhost");
    REQUIRE_FALSE(client.handshake());
    auto r = client.request("GET", "/healthz");
    CHECK(r.status == 200);
    r = client.request("GET", "/v1/sandboxes/sb-a");
    CHECK(r.status == 200);
    CHECK(r.json()["id"] == "sb-a");
    r = client.request("POST", "/v1/sandboxes", R"({"labels":{"team":"tls"}})");
    CHECK(r.status == 201);
    r = client.request("POST", "/v1/sandboxes", R"({"labels":)");
    CHECK(r.status == 400);
}

TEST_CASE("server tls: the certificate does not verify for another name") {
    const TlsFiles files;
    Fixture f(tls_options(files));
    TlsClient client(f.port(), files.ca, "not-this-server.example");
    CHECK(client.handshake());
    // The server is unharmed.
    TlsClient good(f.port(), files.ca, "localhost");
    REQUIRE_FALSE(good.handshake());
    CHECK(good.request("GET", "/healthz").status == 200);
}

TEST_CASE("server tls: plain HTTP to the HTTPS port gets a plain 400 and the connection closes") {
    const TlsFiles files;
    Fixture f(tls_options(files));
    RawConnection raw(f.port());
    REQUIRE(raw.connected());
    raw.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    const auto reply = raw.read_until("}}");
    CHECK(status_of(reply) == 400);
    CHECK(reply.find("this port speaks HTTPS") != std::string::npos);
    CHECK(raw.closed_by_peer(std::chrono::seconds(3)));
    CHECK(f.service.calls.empty());
}

TEST_CASE("server tls: a broken handshake and TLS 1.1 are refused, nothing leaks") {
    const TlsFiles files;
    const auto fds_before = open_fds();
    {
        Fixture f(tls_options(files));
        {
            RawConnection raw(f.port());
            // A handshake record header announcing a ClientHello, then garbage.
            raw.send(std::string("\x16\x03\x01\x00\x40", 5) + std::string(64, '\xAB'));
            CHECK(raw.closed_by_peer(std::chrono::seconds(3)));
        }
        {
            TlsClient old(f.port(), files.ca, "localhost", TLS1_1_VERSION);
            CHECK(old.handshake());
        }
        {
            RawConnection silent(f.port());  // connects, never speaks: the read timeout closes it
            CHECK(silent.closed_by_peer(std::chrono::seconds(5)));
        }
        TlsClient good(f.port(), files.ca, "localhost", TLS1_3_VERSION);
        REQUIRE_FALSE(good.handshake());
        CHECK(good.request("GET", "/healthz").status == 200);
        TlsClient tls12(f.port(), files.ca, "localhost", TLS1_2_VERSION);
        REQUIRE_FALSE(tls12.handshake());
        CHECK(tls12.request("GET", "/healthz").status == 200);
    }
    CHECK(open_fds() == fds_before);
}

TEST_CASE("server tls: unreadable or mismatched certificate files are refused at start") {
    const TlsFiles files;
    const TlsFiles other;
    CHECK(field_of([&] { make_tls_context(files.dir.string() + "/missing.pem", files.key_file); }) ==
          "server.tls_cert");
    CHECK(field_of([&] { make_tls_context(files.cert_file, files.dir.string() + "/missing.pem"); }) ==
          "server.tls_key");
    CHECK(field_of([&] { make_tls_context(files.cert_file, other.key_file); }) == "server.tls_key");
    CHECK(field_of([&] { make_tls_context(files.key_file, files.key_file); }) == "server.tls_cert");
    CHECK_NOTHROW(make_tls_context(files.cert_file, files.key_file));
}
