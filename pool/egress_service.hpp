#pragma once
// EgressService: the host half of every sandbox's egress proxy
// (docs/egress.md). It owns the I/O thread the proxied connections run on,
// the operator's static hosts map, and the counters /metrics reports; it
// hands each sandbox an EgressBridge bound to that sandbox's agent channel,
// policy and budget, and logs every decision (a sandbox's first 200 at info,
// the rest at debug).

#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "http_proxy/hosts_map.hpp"
#include "http_proxy/policy.hpp"
#include "pool/egress_bridge.hpp"
#include "pool/egress_stats.hpp"
#include "vmm/agent_client.hpp"

namespace forkvm::pool {

class EgressService {
public:
    // Starts the I/O thread.
    explicit EgressService(http_proxy::HostsMap hosts);
    ~EgressService();
    EgressService(const EgressService&) = delete;
    EgressService& operator=(const EgressService&) = delete;

    // A bridge carrying `sandbox_id`'s proxy streams under `policy`, with a
    // fresh budget; installed as `agent`'s proxy handler. The caller keeps
    // it and must call close_all() on it before `agent` goes.
    std::shared_ptr<EgressBridge> attach(vmm::AgentClient& agent,
                                         std::shared_ptr<const http_proxy::Policy> policy,
                                         const std::string& sandbox_id);

    [[nodiscard]] EgressStats stats() const;
    [[nodiscard]] const http_proxy::HostsMap& hosts() const noexcept { return *hosts_; }

    // Ends the I/O thread (connections still open are dropped). Idempotent;
    // the destructor calls it. Bridges must be closed before.
    void shutdown() noexcept;

private:
    http_proxy::EgressEvents events_for(const std::string& sandbox_id);

    std::shared_ptr<const http_proxy::HostsMap> hosts_;
    boost::asio::io_context io_;
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> work_;
    std::thread thread_;

    // Shared with the events of every bridge (which may outlive a sandbox,
    // never the service: shutdown() joins the thread they run on).
    struct Counters {
        std::atomic<std::uint64_t> allowed{0};
        std::atomic<std::uint64_t> denied{0};
        std::atomic<std::uint64_t> refused{0};
        std::atomic<std::uint64_t> up{0};
        std::atomic<std::uint64_t> down{0};
    };
    std::shared_ptr<Counters> counters_;
};

}  // namespace forkvm::pool
