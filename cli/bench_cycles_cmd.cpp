// forkvm bench http / forkvm bench api: the sandbox cycle benchmark through
// the REST API of a running server, and through the same service stack
// in-process (no HTTP), so that the server's own overhead shows.
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <spdlog/spdlog.h>
#include <stop_token>

#include "cli/bench_cycles.hpp"
#include "cli/log_setup.hpp"
#include "cli/option_parser.hpp"
#include "cli/service_stack.hpp"
#include "config/config.hpp"
#include "pool/service_error.hpp"

extern char** environ;

namespace forkvm::cli {

namespace {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;
namespace http = boost::beast::http;
using tcp = asio::ip::tcp;

constexpr const char* kHttpUsage =
    "usage: forkvm bench http --url URL --api-key KEY [--concurrency C] [--duration S]\n"
    "                         [--template NAME] [--cacert FILE] [--json]\n"
    "\n"
    "Runs C workers (default 4), each on its own kept-alive connection, for S\n"
    "seconds (default 30): POST /v1/sandboxes (from the template if given), POST\n"
    ".../exec {\"cmd\":[\"echo\",WORD]} (the output is checked), DELETE. Prints cycles\n"
    "per second, p50/p90/p99/max of each step and of the whole cycle, and errors\n"
    "by kind. URL is http://HOST:PORT or https://HOST:PORT (verified against the\n"
    "system's CAs, or --cacert FILE). Exits 0 when there was no error, 1 otherwise.\n";

constexpr const char* kApiUsage =
    "usage: forkvm bench api [--concurrency C] [--duration S] [--json] [-- SERVE-OPTIONS]\n"
    "\n"
    "The cycle of `forkvm bench http`, driven through the same service stack as\n"
    "`forkvm serve` builds (golden snapshot, warm pool, sandbox manager) but\n"
    "in this process, without HTTP. SERVE-OPTIONS are `forkvm serve`'s\n"
    "(--config FILE, --min-warm N, ...; FORKVM_* variables apply too). It waits\n"
    "until the pool holds min_warm VMs before it starts the clock.\n";

struct Url {
    bool tls = false;
    std::string host;
    std::string port;
};

std::optional<Url> parse_url(const std::string& text) {
    static const std::regex re(R"(^(https?)://([^/:\[\]]+|\[[0-9a-fA-F:.]+\]):([0-9]{1,5})/?$)");
    std::smatch m;
    if (!std::regex_match(text, m, re)) return std::nullopt;
    Url url;
    url.tls = m[1] == "https";
    url.host = m[2];
    if (url.host.front() == '[') url.host = url.host.substr(1, url.host.size() - 2);
    url.port = m[3];
    return url;
}

// A blocking HTTP/1.1 client on one kept-alive connection, plain or TLS.
class HttpCycleClient final : public CycleClient {
public:
    HttpCycleClient(const Url& url, std::string key, std::string template_name, ssl::context* tls)
        : url_(url), key_(std::move(key)), template_(std::move(template_name)), tls_(tls) {}

    std::string create(std::string& id_out) override {
        nlohmann::json body = nlohmann::json::object();
        if (!template_.empty()) body["template"] = template_;
        const auto r = request(http::verb::post, "/v1/sandboxes", body.dump());
        if (!r.error.empty()) return r.error;
        if (r.status != 201) return status_error(r);
        const auto j = nlohmann::json::parse(r.body, nullptr, false);
        if (!j.is_object() || !j.contains("id") || !j["id"].is_string()) return "bad create response";
        id_out = j["id"].get<std::string>();
        return {};
    }
    std::string exec_echo(const std::string& id, const std::string& word) override {
        const nlohmann::json body = {{"cmd", {"echo", word}}};
        const auto r = request(http::verb::post, "/v1/sandboxes/" + id + "/exec", body.dump());
        if (!r.error.empty()) return r.error;
        if (r.status != 200) return status_error(r);
        const auto j = nlohmann::json::parse(r.body, nullptr, false);
        if (!j.is_object() || j.value("stdout", "") != word + "\n" || j.value("exit_code", -1) != 0) {
            return "exec output mismatch";
        }
        return {};
    }
    std::string remove(const std::string& id) override {
        const auto r = request(http::verb::delete_, "/v1/sandboxes/" + id, "");
        if (!r.error.empty()) return r.error;
        if (r.status != 204) return status_error(r);
        return {};
    }

private:
    struct Reply {
        int status = 0;
        std::string body;
        std::string error;  // transport failure
    };

    static std::string status_error(const Reply& r) {
        const auto j = nlohmann::json::parse(r.body, nullptr, false);
        std::string code = "?";
        if (j.is_object() && j.contains("error") && j["error"].is_object())
            code = j["error"].value("code", "?");
        return std::to_string(r.status) + " " + code;
    }

    void connect() {
        asio::ip::tcp::resolver resolver(io_);
        const auto endpoints = resolver.resolve(url_.host, url_.port);
        if (tls_ != nullptr) {
            tls_stream_.emplace(io_, *tls_);
            asio::connect(tls_stream_->next_layer(), endpoints);
            tls_stream_->set_verify_mode(ssl::verify_peer);
            tls_stream_->set_verify_callback(ssl::host_name_verification(url_.host));
            // SNI (SSL_set_tlsext_host_name, a macro with a C cast).
            if (SSL_ctrl(tls_stream_->native_handle(), SSL_CTRL_SET_TLSEXT_HOSTNAME,
                         TLSEXT_NAMETYPE_host_name, const_cast<char*>(url_.host.c_str())) != 1) {
                throw std::runtime_error("cannot set the TLS server name");
            }
            tls_stream_->handshake(ssl::stream_base::client);
        } else {
            socket_.emplace(io_);
            asio::connect(*socket_, endpoints);
        }
    }

    template <class Stream>
    Reply exchange(Stream& stream, const http::request<http::string_body>& req, bool& sent) {
        http::write(stream, req);
        sent = true;
        http::response_parser<http::string_body> parser;
        parser.body_limit(16 * 1024 * 1024);
        http::read(stream, buffer_, parser);
        Reply reply;
        reply.status = static_cast<int>(parser.get().result_int());
        reply.body = std::move(parser.get().body());
        if (!parser.get().keep_alive()) drop();
        return reply;
    }

    void drop() {
        socket_.reset();
        tls_stream_.reset();
        buffer_.clear();
    }

    Reply request(http::verb verb, const std::string& target, const std::string& body) {
        http::request<http::string_body> req(verb, target, 11);
        req.set(http::field::host, url_.host);
        req.set(http::field::authorization, "Bearer " + key_);
        if (!body.empty()) {
            req.set(http::field::content_type, "application/json");
            req.body() = body;
        }
        req.prepare_payload();
        // A kept-alive connection the server closed meanwhile is retried once
        // on a new one, but only when the request was not sent whole: a
        // create or exec must never run twice.
        for (int attempt = 0;; ++attempt) {
            const bool reused = socket_.has_value() || tls_stream_.has_value();
            bool sent = false;
            try {
                if (!reused) connect();
                return tls_stream_ ? exchange(*tls_stream_, req, sent) : exchange(*socket_, req, sent);
            } catch (const std::exception& e) {
                drop();
                if (attempt == 0 && reused && !sent) continue;
                Reply failed;
                failed.error = std::string("transport: ") + e.what();
                return failed;
            }
        }
    }

    Url url_;
    std::string key_;
    std::string template_;
    ssl::context* tls_;
    asio::io_context io_;
    std::optional<tcp::socket> socket_;
    std::optional<ssl::stream<tcp::socket>> tls_stream_;
    boost::beast::flat_buffer buffer_;
};

// The same cycle straight through the service, as the HTTP handlers call it.
class ServiceCycleClient final : public CycleClient {
public:
    explicit ServiceCycleClient(pool::SandboxService& service) : service_(service) {}

    std::string create(std::string& id_out) override {
        return guarded([&] { id_out = service_.create(kOwner, pool::CreateSandbox{}).info.id; });
    }
    std::string exec_echo(const std::string& id, const std::string& word) override {
        std::string error;
        const std::string failure = guarded([&] {
            pool::ExecCall call;
            call.argv = {"echo", word};
            const auto result = service_.exec_buffered(kOwner, id, call, std::stop_token{});
            if (result.stdout_data != word + "\n" || result.exit_code != 0) error = "exec output mismatch";
        });
        return failure.empty() ? error : failure;
    }
    std::string remove(const std::string& id) override {
        return guarded([&] { service_.remove(kOwner, id); });
    }

private:
    static constexpr const char* kOwner = "bench";

    template <class F>
    static std::string guarded(F&& f) {
        try {
            f();
            return {};
        } catch (const pool::ServiceError& e) {
            return std::string(pool::to_string(e.code()));
        } catch (const std::exception& e) {
            return std::string("exception: ") + e.what();
        }
    }

    pool::SandboxService& service_;
};

}  // namespace

int bench_http(std::span<char*> args) {
    std::string url_text;
    std::string key;
    std::string template_name;
    std::string cacert;
    std::size_t concurrency = 4;
    std::uint64_t duration_s = 30;
    bool json = false;
    OptionParser parser("forkvm bench http", kHttpUsage);
    parser.text("--url", url_text);
    parser.text("--api-key", key);
    parser.text("--template", template_name);
    parser.text("--cacert", cacert);
    parser.number("--concurrency", concurrency, 1024);
    parser.number("--duration", duration_s, 24ULL * 3600);
    parser.flag("--json", json);
    const auto parsed = parser.parse(args, 0);
    if (parsed.exit_status) return *parsed.exit_status;
    if (!parsed.rest.empty()) return parser.usage_error("unexpected argument '" + parsed.rest.front() + "'");
    const auto url = parse_url(url_text);
    if (!url) return parser.usage_error("--url must be http://HOST:PORT or https://HOST:PORT");
    if (key.empty()) return parser.usage_error("--api-key KEY is required");
    if (concurrency == 0) return parser.usage_error("--concurrency must be at least 1");
    if (duration_s == 0) return parser.usage_error("--duration must be at least 1");

    std::optional<ssl::context> tls;
    if (url->tls) {
        tls.emplace(ssl::context::tls_client);
        boost::system::error_code ec;
        if (cacert.empty()) {
            tls->set_default_verify_paths(ec);
        } else {
            tls->load_verify_file(cacert, ec);
        }
        if (ec) {
            std::fprintf(stderr, "forkvm bench http: cannot load CA certificates: %s\n",
                         ec.message().c_str());
            return 2;
        }
    }
    ssl::context* tls_context = tls ? &*tls : nullptr;
    const auto report = run_cycles(
        "HTTP " + url_text,
        [&] { return std::make_unique<HttpCycleClient>(*url, key, template_name, tls_context); }, concurrency,
        std::chrono::seconds(duration_s));
    print_cycle_report(report, json);
    return report.errors.empty() ? 0 : 1;
}

int bench_api(std::span<char*> args) {
    std::size_t concurrency = 4;
    std::uint64_t duration_s = 30;
    bool json = false;
    OptionParser parser("forkvm bench api", kApiUsage);
    parser.number("--concurrency", concurrency, 1024);
    parser.number("--duration", duration_s, 24ULL * 3600);
    parser.flag("--json", json);
    const auto parsed = parser.parse(args, 0);
    if (parsed.exit_status) return *parsed.exit_status;
    if (concurrency == 0) return parser.usage_error("--concurrency must be at least 1");
    if (duration_s == 0) return parser.usage_error("--duration must be at least 1");
    config::LoadResult loaded;
    try {
        loaded = config::load(parsed.rest, config::environment_from(environ));
    } catch (const config::ConfigError& e) {
        for (const auto& p : e.problems())
            std::fprintf(stderr, "forkvm bench api: %s\n", p.to_string().c_str());
        return 2;
    }
    // Logs go to stderr like serve's, so stdout holds only the report.
    setup_logging(loaded.config.log.level, loaded.config.log.format);
    try {
        ServiceStack stack(loaded.config, detect_cgroups());
        const auto min_warm = stack.warm_pool().settings().min_warm;
        if (!stack.warm_pool().wait_warm(min_warm, std::chrono::minutes(30))) {
            std::fprintf(stderr, "forkvm bench api: the pool did not warm up\n");
            return 1;
        }
        const auto report = run_cycles(
            "in-process API", [&] { return std::make_unique<ServiceCycleClient>(stack.manager()); },
            concurrency, std::chrono::seconds(duration_s));
        stack.shutdown();
        print_cycle_report(report, json);
        return report.errors.empty() ? 0 : 1;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "forkvm bench api: %s\n", e.what());
        return 1;
    }
}

}  // namespace forkvm::cli
