// Egress end to end (docs/egress.md): a real `forkvm serve` with real VMs,
// loopback upstreams in the test environment (plain HTTP, and HTTPS with a
// certificate from a throwaway test CA), names mapped through the server's
// egress.hosts. Clients run in the guest: busybox wget for plain HTTP, and
// egress-tls-client (tests/guest_tools/, static OpenSSL, in the test
// initramfs) for HTTPS through CONNECT with certificate verification.

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <string>
#include <thread>
#include <vector>

#include "tests/kvm/http_client.hpp"
#include "tests/kvm/server_process.hpp"
#include "tests/kvm/vm_fixture.hpp"
#include "tests/support/test_pki.hpp"

using namespace std::chrono_literals;
using forkvm::test::HttpClient;
using forkvm::test::poll_until;
using forkvm::test::ServerProcess;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string kKey = "egress-test-key-0123456789";
const std::string kAdmin = "egress-admin-key-0123456789";

// A listening loopback socket on an ephemeral port.
int listen_loopback(std::uint16_t& port) {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    REQUIRE(::listen(fd, 128) == 0);
    REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
    port = ntohs(a.sin_port);
    return fd;
}

// Accepts connections on its own thread and serves each on a thread of its
// own until stopped; `serve(fd)` owns nothing (the fd is closed after it).
class LoopbackServer {
public:
    explicit LoopbackServer(std::function<void(int)> serve) : serve_(std::move(serve)) {
        listen_fd_ = listen_loopback(port_);
        acceptor_ = std::thread([this] {
            for (;;) {
                const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
                if (fd < 0) return;
                const std::lock_guard lock(mu_);
                workers_.emplace_back([this, fd] {
                    serve_(fd);
                    ::close(fd);
                });
            }
        });
    }
    ~LoopbackServer() {
        ::shutdown(listen_fd_, SHUT_RDWR);
        acceptor_.join();
        ::close(listen_fd_);
        const std::lock_guard lock(mu_);
        for (auto& t : workers_) t.join();
    }
    LoopbackServer(const LoopbackServer&) = delete;
    LoopbackServer& operator=(const LoopbackServer&) = delete;
    [[nodiscard]] std::uint16_t port() const { return port_; }

private:
    std::function<void(int)> serve_;
    int listen_fd_ = -1;
    std::uint16_t port_ = 0;
    std::thread acceptor_;
    std::mutex mu_;
    std::vector<std::thread> workers_;
};

// Reads a request head (bounded, 30 s per read); "" on EOF or timeout.
std::string read_head(const std::function<ssize_t(char*, std::size_t)>& read_some) {
    std::string head;
    char c = 0;
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < 16384) {
        if (read_some(&c, 1) != 1) return "";
        head.push_back(c);
    }
    return head;
}

std::string response(const std::string& body) {
    return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n" + body;
}

// The plain HTTP upstream: answers "plain <target>" to each request;
// requests for /hold/... wait until release() (to keep connections open).
class PlainUpstream {
public:
    PlainUpstream() : server_([this](int fd) { serve(fd); }) {}
    ~PlainUpstream() { release(); }
    PlainUpstream(const PlainUpstream&) = delete;
    PlainUpstream& operator=(const PlainUpstream&) = delete;

    [[nodiscard]] std::uint16_t port() const { return server_.port(); }
    void release() {
        {
            const std::lock_guard lock(mu_);
            released_ = true;
        }
        cv_.notify_all();
    }
    [[nodiscard]] int held() const { return held_.load(); }
    [[nodiscard]] int requests() const { return requests_.load(); }
    [[nodiscard]] std::vector<std::string> heads() const {
        const std::lock_guard lock(mu_);
        return heads_;
    }

private:
    void serve(int fd) {
        pollfd p{fd, POLLIN, 0};
        const std::string head = read_head([&](char* b, std::size_t n) -> ssize_t {
            return ::poll(&p, 1, 30000) == 1 ? ::read(fd, b, n) : -1;
        });
        if (head.empty()) return;
        const std::size_t sp1 = head.find(' ');
        const std::size_t sp2 = head.find(' ', sp1 + 1);
        const std::string target = head.substr(sp1 + 1, sp2 - sp1 - 1);
        ++requests_;
        {
            std::unique_lock lock(mu_);
            heads_.push_back(head);
            if (target.starts_with("/hold/")) {
                ++held_;
                cv_.wait_for(lock, 300s, [&] { return released_; });
            }
        }
        const std::string reply = response("plain " + target);
        (void)::write(fd, reply.data(), reply.size());
    }

    mutable std::mutex mu_;
    std::condition_variable cv_;
    bool released_ = false;
    std::atomic<int> held_{0};
    std::atomic<int> requests_{0};
    std::vector<std::string> heads_;
    LoopbackServer server_;  // last: its threads use the members above
};

// The HTTPS upstream: TLS with a certificate for tls.test from the test CA;
// answers "tls <target>".
class TlsUpstream {
public:
    explicit TlsUpstream(const forkvm::test::Pem& pem) : ctx_(SSL_CTX_new(TLS_server_method())) {
        REQUIRE(ctx_ != nullptr);
        BIO* cert_bio = BIO_new_mem_buf(pem.cert.data(), static_cast<int>(pem.cert.size()));
        X509* leaf = PEM_read_bio_X509(cert_bio, nullptr, nullptr, nullptr);
        REQUIRE(SSL_CTX_use_certificate(ctx_, leaf) == 1);
        X509_free(leaf);
        BIO_free(cert_bio);
        BIO* key_bio = BIO_new_mem_buf(pem.key.data(), static_cast<int>(pem.key.size()));
        EVP_PKEY* key = PEM_read_bio_PrivateKey(key_bio, nullptr, nullptr, nullptr);
        REQUIRE(SSL_CTX_use_PrivateKey(ctx_, key) == 1);
        EVP_PKEY_free(key);
        BIO_free(key_bio);
        server_ = std::make_unique<LoopbackServer>([this](int fd) { serve(fd); });
    }
    ~TlsUpstream() {
        server_.reset();
        SSL_CTX_free(ctx_);
    }
    TlsUpstream(const TlsUpstream&) = delete;
    TlsUpstream& operator=(const TlsUpstream&) = delete;
    [[nodiscard]] std::uint16_t port() const { return server_->port(); }
    [[nodiscard]] int handshakes() const { return handshakes_.load(); }

private:
    void serve(int fd) {
        timeval tv{30, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        SSL* ssl = SSL_new(ctx_);
        SSL_set_fd(ssl, fd);
        if (SSL_accept(ssl) == 1) {
            ++handshakes_;
            const std::string head = read_head(
                [&](char* b, std::size_t n) -> ssize_t { return SSL_read(ssl, b, static_cast<int>(n)); });
            if (!head.empty()) {
                const std::size_t sp1 = head.find(' ');
                const std::size_t sp2 = head.find(' ', sp1 + 1);
                const std::string reply = response("tls " + head.substr(sp1 + 1, sp2 - sp1 - 1));
                SSL_write(ssl, reply.data(), static_cast<int>(reply.size()));
                SSL_shutdown(ssl);
            }
        }
        SSL_free(ssl);
        ERR_clear_error();
    }

    SSL_CTX* ctx_;
    std::atomic<int> handshakes_{0};
    std::unique_ptr<LoopbackServer> server_;
};

struct Fixture {
    fs::path dir;
    fs::path log;
    forkvm::test::TestPki pki;
    PlainUpstream plain;
    TlsUpstream tls{pki.issue({"tls.test"}, {})};
    std::unique_ptr<ServerProcess> server;
    std::unique_ptr<HttpClient> http;

    Fixture() {
        dir = fs::temp_directory_path() / ("forkvm-egress-test-" + std::to_string(::getpid()));
        fs::remove_all(dir);
        fs::create_directories(dir / "data");
        // Next to the test binary: readable from outside the emulated KVM host.
        log = fs::path(FORKVM_TEST_BINARY).parent_path() / "egress_test.log";
        fs::remove(log);
        const json config = {
            {"server", {{"listen", "127.0.0.1:0"}, {"threads", 2}, {"shutdown_deadline", "10s"}}},
            {"auth", {{"api_keys", {kKey}}, {"admin_key", kAdmin}, {"rate_limit", 0}}},
            {"vm", {{"initrd", FORKVM_TEST_EGRESS_INITRD}}},
            {"pool", {{"min_warm", 1}, {"max_warm", 2}, {"lease_wait", "180s"}}},
            {"sandbox", {{"max_sandboxes", 16}, {"max_per_key", 16}}},
            // alias.test reaches the TLS upstream under a name its certificate does not carry.
            {"egress",
             {{"hosts",
               {"plain.test=127.0.0.1", "tls.test=127.0.0.1", "other.test=127.0.0.1",
                "alias.test=127.0.0.1"}}}},
            {"log", {{"level", "info"}}},
            {"data_dir", (dir / "data").string()},
        };
        std::ofstream(dir / "config.json") << config.dump(2);
        server = std::make_unique<ServerProcess>(dir / "config.json", log);
        const std::uint16_t port = server->wait_listening(600s);
        http = std::make_unique<HttpClient>("127.0.0.1", port);
        const bool ready = poll_until([&] { return http->get("/readyz", "").status == 200; }, 600s);
        INFO("server log:\n" << server->log());
        REQUIRE(ready);
    }
    ~Fixture() {
        server.reset();
        plain.release();
        std::error_code ec;
        fs::remove_all(dir, ec);
    }
};

Fixture& fixture() {
    static Fixture f;
    return f;
}

// The policy the tests use: plain.test (its port, not /secret/), tls.test
// and alias.test (the TLS port), any public address on port 80; the
// upstreams' own 127.0.0.1 is named in allow_private.
json policy(int max_connections) {
    auto& f = fixture();
    return {{"allow",
             {{{"domain", "plain.test"}, {"ports", {f.plain.port()}}},
              {{"domain", "tls.test"}, {"ports", {f.tls.port()}}},
              {{"domain", "alias.test"}, {"ports", {f.tls.port()}}},
              {{"ip", "0.0.0.0/0"}, {"ports", {80}}}}},
            {"deny", {{{"domain", "plain.test"}, {"paths", {"/secret/"}}}}},
            {"allow_private", {"127.0.0.1"}},
            {"limits", {{"max_connections", max_connections}}}};
}

std::string create_sandbox(const json& body) {
    auto r = fixture().http->post("/v1/sandboxes", kKey, body);
    INFO(r.body);
    REQUIRE(r.status == 201);
    return r.json().at("id").get<std::string>();
}

json run(const std::string& id, const std::string& script) {
    auto r = fixture().http->post("/v1/sandboxes/" + id + "/exec", kKey,
                                  {{"shell", script}, {"timeout_ms", 300000}});
    INFO(r.body);
    REQUIRE(r.status == 200);
    return r.json();
}

// Output and exit code of `script`, for messages.
std::string all_of(const json& result) {
    return result["stdout"].get<std::string>() + result["stderr"].get<std::string>() + " [exit " +
           std::to_string(result["exit_code"].get<int>()) + "]";
}

std::string plain_url(const std::string& host, const std::string& path) {
    return "http://" + host + ":" + std::to_string(fixture().plain.port()) + path;
}

// egress-tls-client through the proxy; the CA is at /tmp/ca.pem in the guest.
std::string tls_fetch(const std::string& id, const std::string& host, std::uint16_t port,
                      const std::string& path = "/") {
    return all_of(run(id, "egress-tls-client " + host + " " + std::to_string(port) + " /tmp/ca.pem " + path));
}

// forkvm_egress_decisions_total for allowed, denied, refused.
std::array<long, 3> decisions() {
    const auto metrics = fixture().http->get("/metrics", kAdmin);
    REQUIRE(metrics.status == 200);
    std::array<long, 3> out{};
    const char* names[] = {"allowed", "denied", "refused"};
    for (std::size_t i = 0; i < out.size(); ++i) {
        const std::string key = std::string("forkvm_egress_decisions_total{decision=\"") + names[i] + "\"} ";
        const std::size_t at = metrics.body.find(key);
        REQUIRE(at != std::string::npos);
        out[i] = std::stol(metrics.body.substr(at + key.size()));
    }
    return out;
}

}  // namespace

TEST_CASE("egress: without a policy a sandbox reaches nothing, and the proxy says why") {
    auto& f = fixture();
    const std::string id = create_sandbox(json::object());
    auto got = f.http->get("/v1/sandboxes/" + id, kKey);
    REQUIRE(got.status == 200);
    CHECK(got.json()["egress"]["allow"] == json::array());

    const auto env = run(id, "env | grep -i _proxy | sort");
    CHECK(env["stdout"].get<std::string>().find("HTTP_PROXY=http://127.0.0.1:3128") != std::string::npos);
    CHECK(env["stdout"].get<std::string>().find("https_proxy=http://127.0.0.1:3128") != std::string::npos);

    const auto r = run(id, "wget -q -O - " + plain_url("plain.test", "/ok/none"));
    INFO(all_of(r));
    CHECK(r["exit_code"] != 0);
    CHECK(r["stderr"].get<std::string>().find("403") != std::string::npos);
    CHECK(f.http->del("/v1/sandboxes/" + id, kKey).status == 204);
}

TEST_CASE("egress: allowed hosts work, everything else is refused with a clear proxy error") {
    auto& f = fixture();
    const int seen_before = f.plain.requests();
    const auto before = decisions();
    const std::string id = create_sandbox({{"egress", policy(16)}});
    auto got = f.http->get("/v1/sandboxes/" + id, kKey);
    REQUIRE(got.status == 200);
    CHECK(got.json()["egress"]["allow"].size() == 4U);
    CHECK(got.json()["egress"]["limits"]["max_connections"] == 16);
    REQUIRE(f.http->put("/v1/sandboxes/" + id + "/files?path=/tmp/ca.pem", kKey, f.pki.ca_pem()).status ==
            201);

    // Plain HTTP through busybox wget: allowed.
    auto r = run(id, "wget -q -O - " + plain_url("plain.test", "/ok/1"));
    CHECK(all_of(r) == "plain /ok/1 [exit 0]");
    // The upstream got an origin-form request with the URL's Host.
    bool origin_form = false;
    for (const auto& head : f.plain.heads())
        origin_form = origin_form ||
                      (head.starts_with("GET /ok/1 HTTP/1.1\r\n") &&
                       head.find("Host: plain.test:" + std::to_string(f.plain.port())) != std::string::npos);
    CHECK(origin_form);

    // A host the policy does not name; a denied path on an allowed host.
    for (const std::string& url :
         {plain_url("other.test", "/ok/2"), plain_url("plain.test", "/secret/key")}) {
        r = run(id, "wget -q -O - " + url);
        INFO(url << ": " << all_of(r));
        CHECK(r["exit_code"] != 0);
        CHECK(r["stderr"].get<std::string>().find("403 Forbidden") != std::string::npos);
    }
    // Private addresses as IP literals, however spelled (10.0.0.1 octal and
    // as one integer, the metadata address in hex): refused before any
    // connect, though an allow rule covers every address on port 80.
    for (const std::string& url :
         {std::string("http://012.0.0.1/"), std::string("http://167772161/"),
          std::string("http://0xa9.0xfe.0xa9.0xfe/latest/meta-data/"), std::string("http://10.0.0.1/")}) {
        r = run(id, "wget -q -O - " + url);
        INFO(url << ": " << all_of(r));
        CHECK(r["exit_code"] != 0);
        CHECK(r["stderr"].get<std::string>().find("403 Forbidden") != std::string::npos);
    }

    // HTTPS through CONNECT, TLS end to end, the certificate verified.
    CHECK(tls_fetch(id, "tls.test", f.tls.port(), "/hello") ==
          "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
          "tls /hello [exit 0]");
    // CONNECT to a port the policy does not allow for that host.
    std::string out = tls_fetch(id, "tls.test", f.plain.port());
    CHECK(out.find("proxy refused: HTTP/1.1 403 Forbidden") != std::string::npos);
    CHECK(out.find("[exit 3]") != std::string::npos);
    // The refusal is a readable response from the proxy itself.
    CHECK(out.find("forkvm egress: tls.test:" + std::to_string(f.plain.port())) != std::string::npos);
    // CONNECT to a host the policy does not allow.
    out = tls_fetch(id, "other.test", f.tls.port());
    CHECK(out.find("proxy refused: HTTP/1.1 403 Forbidden") != std::string::npos);
    // Allowed, but the certificate does not name the host: the client's
    // verification fails (the proxy never sees inside the tunnel).
    out = tls_fetch(id, "alias.test", f.tls.port());
    CHECK(out.find("[exit 4]") != std::string::npos);
    // `GET https://…` sent to the proxy (what busybox wget does) is refused
    // with a message to use CONNECT.
    r = run(id, "wget -q -O - https://tls.test:" + std::to_string(f.tls.port()) + "/");
    INFO(all_of(r));
    CHECK(r["exit_code"] != 0);
    CHECK(r["stderr"].get<std::string>().find("400") != std::string::npos);

    // The upstream saw only the allowed requests.
    CHECK(f.plain.requests() - seen_before == 1);

    // Counted in /metrics: this case's 3 allowed (plain, tls, alias), 8
    // denied (2 names or paths, 4 literals, 2 CONNECTs), 1 refused (https://).
    const auto after = decisions();
    CHECK(after[0] - before[0] == 3);
    CHECK(after[1] - before[1] == 8);
    CHECK(after[2] - before[2] == 1);
    // Logged.
    const std::string log = f.server->log();
    CHECK(log.find("egress " + id + ": allowed GET http://plain.test:") != std::string::npos);
    CHECK(log.find("egress " + id + ": refused GET http://10.0.0.1") != std::string::npos);
    CHECK(log.find("egress " + id + ": refused CONNECT other.test:" + std::to_string(f.tls.port()) +
                   " with 403") != std::string::npos);
    CHECK(f.http->del("/v1/sandboxes/" + id, kKey).status == 204);
}

TEST_CASE("egress: 50 concurrent requests from one guest all complete") {
    auto& f = fixture();
    const std::string id = create_sandbox({{"egress", policy(64)}});
    const int before = f.plain.requests();
    const auto r = run(id,
                       "i=0; while [ $i -lt 50 ]; do i=$((i+1)); "
                       "wget -q -O /tmp/c$i " +
                           plain_url("plain.test", "/ok/c") +
                           "$i & done; wait; "
                           "i=0; n=0; while [ $i -lt 50 ]; do i=$((i+1)); "
                           "[ \"$(cat /tmp/c$i)\" = \"plain /ok/c$i\" ] && n=$((n+1)); done; echo $n");
    CHECK(all_of(r) == "50\n [exit 0]");
    CHECK(f.plain.requests() - before == 50);
    CHECK(f.http->del("/v1/sandboxes/" + id, kKey).status == 204);
}

TEST_CASE("egress: the connection limit holds past its value, and a fork waits for open connections") {
    auto& f = fixture();
    const std::string id = create_sandbox({{"egress", policy(2)}});
    // Two connections held open by the upstream.
    (void)run(id, "for i in 1 2; do wget -q -O /tmp/h$i " + plain_url("plain.test", "/hold/") +
                      "$i </dev/null >/dev/null 2>&1 & done");
    REQUIRE(poll_until([&] { return f.plain.held() == 2; }, 120s));
    // A third is refused by the proxy: 429.
    auto r = run(id, "wget -q -O - " + plain_url("plain.test", "/ok/3"));
    INFO(all_of(r));
    CHECK(r["exit_code"] != 0);
    CHECK(r["stderr"].get<std::string>().find("429") != std::string::npos);
    // A fork cannot carry open proxied connections into a clone: 409.
    auto fork = f.http->post("/v1/sandboxes/" + id + "/fork", kKey, json::object());
    CHECK(fork.status == 409);
    CHECK(fork.body.find("proxied connection") != std::string::npos);

    f.plain.release();
    r = run(id,
            "while [ \"$(cat /tmp/h1 /tmp/h2 2>/dev/null)\" != 'plain /hold/1plain /hold/2' ]; "
            "do sleep 0.2; done; echo both");
    CHECK(all_of(r) == "both\n [exit 0]");
    // With them closed the fork goes ahead, and the clone keeps the policy.
    fork = f.http->post("/v1/sandboxes/" + id + "/fork", kKey, json::object());
    INFO(fork.body);
    REQUIRE(fork.status == 201);
    const std::string clone = fork.json()["sandboxes"][0]["id"].get<std::string>();
    CHECK(fork.json()["sandboxes"][0]["egress"] == f.http->get("/v1/sandboxes/" + id, kKey).json()["egress"]);
    r = run(clone, "wget -q -O - " + plain_url("plain.test", "/ok/clone"));
    CHECK(all_of(r) == "plain /ok/clone [exit 0]");
    CHECK(f.http->del("/v1/sandboxes/" + clone, kKey).status == 204);
    CHECK(f.http->del("/v1/sandboxes/" + id, kKey).status == 204);
}
