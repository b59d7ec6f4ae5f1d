#pragma once
// HttpServer: the REST API of `forkvm serve` (docs/api.md) over a
// pool::SandboxService.
//
//   auto options = server::server_options_from(config);
//   server::HttpServer http(options, service);
//   http.start();                       // binds; port() is valid from here
//   ...
//   http.stop(options.shutdown_deadline);
//
// Threads: `io_threads` run Boost.Asio (accept, parse, write; never a
// service call); a bounded worker pool runs the blocking service calls.
// Connection cap: at max_connections open connections a new one is answered
// "503 unavailable" (Retry-After: 1) and closed at once, so clients get a
// clear answer instead of hanging in the listen backlog.
// TLS: with options.tls_cert/tls_key the listener speaks HTTPS only
// (server/tls_context.hpp); plain HTTP sent to it gets a plain-text 400 and
// the connection closes.

#include <chrono>
#include <cstdint>
#include <memory>

#include "pool/sandbox_service.hpp"
#include "server/server_options.hpp"

namespace forkvm::server {

class HttpServer {
public:
    HttpServer(ServerOptions options, pool::SandboxService& service);
    ~HttpServer();  // stop(shutdown_deadline) if still running
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    // Binds and starts the io threads. Throws ServiceError(invalid_argument,
    // field "server.listen") when the address cannot be bound.
    void start();
    // The bound port (the real one when options.port was 0).
    std::uint16_t port() const noexcept;

    // Stops accepting at once, lets requests in progress finish until the
    // deadline, then cancels the rest (their stop tokens fire) and closes
    // every connection. Idle keep-alive connections close at once.
    // Idempotent; blocks until every thread is joined.
    void stop(std::chrono::milliseconds deadline);

    std::size_t open_connections() const;

private:
    class Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace forkvm::server
