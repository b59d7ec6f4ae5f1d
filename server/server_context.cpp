#include "server/server_context.hpp"

#include "server/tls_context.hpp"

namespace forkvm::server {

namespace {

DecodeLimits limits_of(const ServerOptions& options) {
    DecodeLimits limits;
    limits.max_fork_count = options.max_fork_count;
    limits.max_output_bytes = options.max_exec_output_bytes;
    return limits;
}

}  // namespace

ServerContext::ServerContext(ServerOptions opts, pool::SandboxService& service, std::string openapi_yaml)
    : options(std::move(opts)),
      tls(options.tls_cert.empty() && options.tls_key.empty()
              ? nullptr
              : make_tls_context(options.tls_cert, options.tls_key)),
      auth(options.api_keys, options.admin_key),
      rate_limiter(options.rate_limit, options.rate_burst),
      handlers(service, limits_of(options), metrics, std::move(openapi_yaml)),
      workers(options.worker_threads, options.worker_queue) {}

void ServerContext::add(HttpSession* session, const std::shared_ptr<HttpSession>& shared) {
    const std::lock_guard lock(mutex_);
    sessions_[session] = shared;
}

void ServerContext::remove(HttpSession* session) {
    {
        const std::lock_guard lock(mutex_);
        sessions_.erase(session);
    }
    gone_cv_.notify_all();
}

std::vector<std::shared_ptr<HttpSession>> ServerContext::sessions() const {
    std::vector<std::shared_ptr<HttpSession>> out;
    const std::lock_guard lock(mutex_);
    for (const auto& [ptr, weak] : sessions_) {
        if (auto shared = weak.lock()) out.push_back(std::move(shared));
    }
    return out;
}

std::size_t ServerContext::session_count() const {
    const std::lock_guard lock(mutex_);
    return sessions_.size();
}

bool ServerContext::wait_sessions_gone(std::chrono::steady_clock::time_point deadline) const {
    std::unique_lock lock(mutex_);
    return gone_cv_.wait_until(lock, deadline, [&] { return sessions_.empty(); });
}

}  // namespace forkvm::server
