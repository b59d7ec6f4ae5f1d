#pragma once
// State shared by the listener and every connection of one HttpServer.

#include <atomic>
#include <boost/asio/ssl/context.hpp>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "server/api_handlers.hpp"
#include "server/auth.hpp"
#include "server/metrics.hpp"
#include "server/rate_limiter.hpp"
#include "server/server_options.hpp"
#include "server/worker_pool.hpp"

namespace forkvm::server {

class HttpSession;

struct ServerContext {
    ServerContext(ServerOptions opts, pool::SandboxService& service, std::string openapi_yaml);

    const ServerOptions options;
    // Null for plain HTTP; otherwise every connection speaks TLS.
    const std::shared_ptr<boost::asio::ssl::context> tls;
    const Authenticator auth;
    RateLimiter rate_limiter;
    ServerMetrics metrics;
    const ApiHandlers handlers;
    WorkerPool workers;
    std::atomic<bool> stopping{false};

    // Live connections, so stop() can reach them; sessions add and remove
    // themselves.
    void add(HttpSession* session, const std::shared_ptr<HttpSession>& shared);
    void remove(HttpSession* session);
    std::vector<std::shared_ptr<HttpSession>> sessions() const;
    std::size_t session_count() const;
    // True once no session is left; false at the deadline.
    bool wait_sessions_gone(std::chrono::steady_clock::time_point deadline) const;

private:
    mutable std::mutex mutex_;
    mutable std::condition_variable gone_cv_;
    std::unordered_map<HttpSession*, std::weak_ptr<HttpSession>> sessions_;
};

}  // namespace forkvm::server
