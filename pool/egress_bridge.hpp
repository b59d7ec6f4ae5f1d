#pragma once
// EgressBridge: a sandbox's egress proxy streams (vmm::ProxyStreamHandler,
// from its AgentClient) carried out by http_proxy::EgressConnection on the
// host, one connection per stream, under the sandbox's policy and budget
// (docs/egress.md). It keeps both credit windows of each stream: the
// agent's (host bytes it may still take) and ours (client bytes we let
// come, granted back as the relay writes them upstream).

#include <boost/asio/any_io_executor.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>

#include "http_proxy/egress_relay.hpp"
#include "vmm/agent_client.hpp"

namespace forkvm::pool {

class EgressBridge : public vmm::ProxyStreamHandler, public std::enable_shared_from_this<EgressBridge> {
public:
    // Client bytes each stream may send before the relay wrote them upstream.
    static constexpr std::uint32_t kWindow = 64 * 1024;
    // Streams tracked at once (open, or ended here and not yet closed by the
    // agent); more are refused.
    static constexpr std::size_t kMaxStreams = 1024;

    // Owned by a shared_ptr (its streams hold weak references to it); the
    // agent client must outlive it.
    EgressBridge(vmm::AgentClient& agent, boost::asio::any_io_executor executor,
                 http_proxy::EgressContext context);
    ~EgressBridge() override;
    EgressBridge(const EgressBridge&) = delete;
    EgressBridge& operator=(const EgressBridge&) = delete;

    // Ends every open connection and stops all use of the agent client:
    // call it before the client goes (the relays finish on their own time).
    // Afterwards new streams are refused.
    void close_all(const std::string& reason);
    // Streams open (or ended here, waiting for the agent's close).
    [[nodiscard]] std::size_t open_streams() const;
    // Called (on a transport thread, no lock held) each time the last open
    // stream is forgotten; never after close_all().
    void set_on_idle(std::function<void()> on_idle);

    void on_proxy_open(std::uint32_t stream, std::uint32_t initial_credit) override;
    void on_proxy_data(std::uint32_t stream, proto::Bytes data) override;
    void on_proxy_credit(std::uint32_t stream, std::uint32_t bytes) override;
    void on_proxy_close(std::uint32_t stream, const proto::ProxyClose& close) override;
    void on_proxy_writable() override;

private:
    class Stream;
    friend class Stream;
    void forget_if_done(std::uint32_t stream);
    std::shared_ptr<Stream> find(std::uint32_t stream);  // nullptr when unknown
    // Every frame to the agent goes through here: nothing once closed.
    // False when it was not sent (closed, or the channel refused it).
    template <class M>
    bool send_to_agent(std::uint32_t stream, const M& message) {
        const std::lock_guard lock(mu_);
        return !closed_ && agent_.send_proxy(stream, message);
    }
    vmm::ProxySend data_to_agent(std::uint32_t stream, const proto::ProxyData& frame) {
        const std::lock_guard lock(mu_);
        return closed_ ? vmm::ProxySend::unusable : agent_.send_proxy(stream, frame);
    }

    vmm::AgentClient& agent_;
    boost::asio::any_io_executor executor_;
    http_proxy::EgressContext context_;
    mutable std::mutex mu_;
    std::map<std::uint32_t, std::shared_ptr<Stream>> streams_;
    bool closed_ = false;
    std::function<void()> on_idle_;
};

}  // namespace forkvm::pool
