#include "pool/egress_service.hpp"

#include <atomic>
#include <chrono>
#include <spdlog/spdlog.h>
#include <utility>

namespace forkvm::pool {

namespace {
constexpr std::uint32_t kInfoDecisions = 200;  // per sandbox
}  // namespace

EgressService::EgressService(http_proxy::HostsMap hosts)
    : hosts_(std::make_shared<const http_proxy::HostsMap>(std::move(hosts))),
      work_(boost::asio::make_work_guard(io_)),
      counters_(std::make_shared<Counters>()) {
    thread_ = std::thread([this] {
        for (;;) {
            try {
                io_.run();
                return;
            } catch (const std::exception& e) {
                // A handler threw (out of memory at worst): that connection
                // is lost, the others go on.
                spdlog::error("egress: a proxied connection failed: {}", e.what());
            }
        }
    });
}

EgressService::~EgressService() { shutdown(); }

void EgressService::shutdown() noexcept {
    // The sandboxes' bridges were closed: their aborts are posted. Let them
    // run (each connection closes its sockets and reports its bytes), then
    // stop whatever is left after a short grace.
    work_.reset();
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    while (!io_.stopped() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    io_.stop();
    if (thread_.joinable()) thread_.join();
}

http_proxy::EgressEvents EgressService::events_for(const std::string& sandbox_id) {
    http_proxy::EgressEvents events;
    // A guest can make decisions as fast as it likes: its first ones are
    // logged at info, the rest at debug (the counters see them all).
    auto logged = std::make_shared<std::atomic<std::uint32_t>>(0);
    events.decided = [counters = counters_, sandbox_id, logged](const http_proxy::ConnectPlan& plan) {
        const std::string what = plan.request_line.empty() ? "(no request)" : plan.request_line;
        if (plan.allowed()) {
            counters->allowed.fetch_add(1, std::memory_order_relaxed);
        } else {
            (plan.status == 403 ? counters->denied : counters->refused)
                .fetch_add(1, std::memory_order_relaxed);
        }
        const std::uint32_t n = logged->fetch_add(1, std::memory_order_relaxed);
        const auto level = n < kInfoDecisions ? spdlog::level::info : spdlog::level::debug;
        if (n == kInfoDecisions)
            spdlog::info("egress {}: {} decisions logged; further ones at debug level", sandbox_id, n);
        if (plan.allowed()) {
            spdlog::log(level, "egress {}: allowed {} -> {}:{} ({})", sandbox_id, what,
                        plan.address->to_string(), plan.port, plan.reason);
        } else {
            spdlog::log(level, "egress {}: refused {} with {}: {}", sandbox_id, what, plan.status,
                        plan.reason);
        }
    };
    events.closed = [counters = counters_, sandbox_id](const std::string& reason, std::uint64_t up,
                                                       std::uint64_t down) {
        counters->up.fetch_add(up, std::memory_order_relaxed);
        counters->down.fetch_add(down, std::memory_order_relaxed);
        spdlog::debug("egress {}: closed ({} bytes up, {} down): {}", sandbox_id, up, down, reason);
    };
    return events;
}

std::shared_ptr<EgressBridge> EgressService::attach(vmm::AgentClient& agent,
                                                    std::shared_ptr<const http_proxy::Policy> policy,
                                                    const std::string& sandbox_id) {
    http_proxy::EgressContext context;
    context.budget = std::make_shared<http_proxy::EgressBudget>(policy->limits());
    context.policy = std::move(policy);
    context.hosts = hosts_;
    context.events = events_for(sandbox_id);
    auto bridge = std::make_shared<EgressBridge>(agent, io_.get_executor(), std::move(context));
    agent.set_proxy_handler(bridge);
    return bridge;
}

EgressStats EgressService::stats() const {
    EgressStats s;
    s.allowed = counters_->allowed.load(std::memory_order_relaxed);
    s.denied = counters_->denied.load(std::memory_order_relaxed);
    s.refused = counters_->refused.load(std::memory_order_relaxed);
    s.bytes_to_upstream = counters_->up.load(std::memory_order_relaxed);
    s.bytes_to_guest = counters_->down.load(std::memory_order_relaxed);
    return s;
}

}  // namespace forkvm::pool
