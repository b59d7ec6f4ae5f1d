#include "server/http_server.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <filesystem>
#include <mutex>
#include <spdlog/spdlog.h>
#include <thread>
#include <vector>

#include "pool/private_dir.hpp"
#include "server/http_session.hpp"
#include "server/openapi_spec.hpp"
#include "server/request_id.hpp"
#include "server/server_context.hpp"

namespace forkvm::server {

namespace asio = boost::asio;
using boost::system::error_code;
using tcp = asio::ip::tcp;

class HttpServer::Impl {
public:
    Impl(ServerOptions options, pool::SandboxService& service)
        : context_(std::move(options), service, std::string(openapi_yaml())),
          ioc_(),
          acceptor_(asio::make_strand(ioc_)),
          accept_retry_(acceptor_.get_executor()),
          work_(asio::make_work_guard(ioc_)) {}

    ~Impl() { stop(context_.options.shutdown_deadline); }

    void start() {
        const std::lock_guard lock(mutex_);
        if (started_) return;
        if (context_.options.max_connections == 0) {
            throw pool::ServiceError::invalid_argument("server.max_connections", "must be >= 1");
        }
        prepare_spool_dir();
        error_code ec;
        const auto address = asio::ip::make_address(context_.options.host, ec);
        if (ec) {
            throw pool::ServiceError::invalid_argument("server.listen",
                                                       "not an IP address: " + context_.options.host);
        }
        const tcp::endpoint endpoint(address, context_.options.port);
        acceptor_.open(endpoint.protocol(), ec);
        if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
        if (!ec) acceptor_.bind(endpoint, ec);
        if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
        if (ec) {
            throw pool::ServiceError::invalid_argument(
                "server.listen", "cannot listen on " + context_.options.host + ":" +
                                     std::to_string(context_.options.port) + ": " + ec.message());
        }
        port_ = acceptor_.local_endpoint().port();
        started_ = true;
        accept();
        const auto threads = std::max<std::size_t>(context_.options.io_threads, 1);
        for (std::size_t i = 0; i < threads; ++i) threads_.emplace_back([this] { run_io(); });
        spdlog::info("http: listening on {}:{} ({}, {} io threads, {} workers)", context_.options.host, port_,
                     context_.tls ? "HTTPS" : "plain HTTP", threads, context_.options.worker_threads);
    }

    void stop(std::chrono::milliseconds deadline) {
        const std::lock_guard lock(mutex_);
        if (!started_ || stopped_) return;
        stopped_ = true;
        context_.stopping = true;
        const auto until = std::chrono::steady_clock::now() + deadline;
        asio::post(acceptor_.get_executor(), [this] {
            error_code ignored;
            acceptor_.close(ignored);
            accept_retry_.cancel();
        });
        for (const auto& session : context_.sessions()) session->close_if_idle();
        if (!context_.wait_sessions_gone(until)) {
            spdlog::warn("http: shutdown deadline passed with {} connections open; closing them",
                         context_.session_count());
            for (const auto& session : context_.sessions()) session->force_close();
        }
        // Workers finish (the service honours the stop tokens), post their
        // results to closed connections, and let go of them.
        context_.workers.shutdown();
        context_.wait_sessions_gone(std::chrono::steady_clock::now() + std::chrono::seconds(5));
        work_.reset();
        ioc_.stop();
        for (auto& thread : threads_) {
            if (thread.joinable()) thread.join();
        }
        threads_.clear();
        spdlog::info("http: stopped");
    }

    std::uint16_t port() const noexcept { return port_; }
    std::size_t open_connections() const { return context_.session_count(); }

private:
    void accept() {
        acceptor_.async_accept(asio::make_strand(ioc_), [this](error_code ec, tcp::socket socket) {
            if (ec == asio::error::operation_aborted || !acceptor_.is_open()) return;
            if (!ec) {
                if (context_.stopping.load()) return;
                if (context_.session_count() >= context_.options.max_connections) {
                    reject(std::move(socket));
                } else {
                    error_code ignored;
                    socket.set_option(tcp::no_delay(true), ignored);
                    std::make_shared<HttpSession>(std::move(socket), context_)->start();
                }
            } else {
                // EMFILE and friends: the pending connection stays queued, so
                // an immediate retry would fail again at once and spin. Wait
                // a little (a connection may close meanwhile), and log once
                // per burst, not per try.
                if (!accept_failing_)
                    spdlog::warn("http: accept failed: {} (retrying every 100 ms)", ec.message());
                accept_failing_ = true;
                accept_retry_.expires_after(std::chrono::milliseconds(100));
                accept_retry_.async_wait([this](error_code wait_ec) {
                    if (!wait_ec) accept();
                });
                return;
            }
            accept_failing_ = false;
            accept();
        });
    }

    // An exception escaping a handler (bad_alloc in a parser, say) must not
    // end an io thread (and std::terminate the server with every sandbox):
    // log it and keep running the loop. The session it hit is dropped with
    // its handler.
    void run_io() {
        for (;;) {
            try {
                ioc_.run();
                return;
            } catch (const std::exception& e) {
                spdlog::error("http: an io handler threw: {}", e.what());
            } catch (...) {
                spdlog::error("http: an io handler threw a non-standard exception");
            }
        }
    }

    // The folder for spooled import bodies: created if missing, and emptied of
    // files a crashed run left behind.
    void prepare_spool_dir() const {
        const auto& dir = context_.options.spool_dir;
        pool::ensure_private_dir(dir);
        std::error_code ec;
        for (std::filesystem::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
            if (it->path().filename().string().starts_with("import-")) {
                std::error_code remove_ec;
                std::filesystem::remove(it->path(), remove_ec);
            }
        }
    }

    // Over the connection cap: a short 503 and close.
    static void reject(tcp::socket socket) {
        static const std::string body =
            R"({"error":{"code":"unavailable","message":"too many open connections, retry later"}})";
        auto state = std::make_shared<std::pair<tcp::socket, std::string>>(
            std::move(socket),
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            "Connection: close\r\nX-Request-Id: " +
                generate_request_id() + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" +
                body);
        asio::async_write(state->first, asio::buffer(state->second), [state](error_code, std::size_t) {
            error_code ignored;
            state->first.shutdown(tcp::socket::shutdown_both, ignored);
            state->first.close(ignored);
        });
        spdlog::warn("http: connection refused: max_connections reached");
    }

    // Declared before ioc_: destroying ioc_ destroys any handler still
    // holding a session, whose destructor unregisters from context_.
    ServerContext context_;
    asio::io_context ioc_;
    tcp::acceptor acceptor_;
    asio::steady_timer accept_retry_;  // on the acceptor's strand
    bool accept_failing_ = false;      // only touched on the acceptor's strand
    asio::executor_work_guard<asio::io_context::executor_type> work_;
    std::vector<std::thread> threads_;
    std::mutex mutex_;
    bool started_ = false;
    bool stopped_ = false;
    std::uint16_t port_ = 0;
};

HttpServer::HttpServer(ServerOptions options, pool::SandboxService& service)
    : impl_(std::make_unique<Impl>(std::move(options), service)) {}

HttpServer::~HttpServer() = default;

void HttpServer::start() { impl_->start(); }

std::uint16_t HttpServer::port() const noexcept { return impl_->port(); }

void HttpServer::stop(std::chrono::milliseconds deadline) { impl_->stop(deadline); }

std::size_t HttpServer::open_connections() const { return impl_->open_connections(); }

}  // namespace forkvm::server
