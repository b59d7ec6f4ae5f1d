// EgressConnection: one proxied connection of a sandbox, carried out on the
// host. The guest side is a GuestStream (the agent channel, or a test's
// fake); the other side is the one TCP connection the plan allows. It reads
// the client's request head, decides (plan_connection), refuses with a
// complete response or connects to exactly the checked address, then relays
// bytes both ways under the sandbox's EgressBudget and the connection's
// deadlines (docs/egress.md §6).
//
// Threads: everything runs on the given executor (one strand's worth: the
// public calls post onto it), so the transport may call in from its own
// threads.
#pragma once

#include <array>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "http_proxy/connect_plan.hpp"
#include "http_proxy/egress_budget.hpp"
#include "http_proxy/hosts_map.hpp"
#include "http_proxy/policy.hpp"

namespace forkvm::http_proxy {

// The guest's end of one connection, as the transport offers it.
class GuestStream {
public:
    virtual ~GuestStream() = default;
    // Bytes for the client in the guest. The transport calls `sent` (from
    // any thread) when it can take more; the relay reads nothing further
    // from the upstream until then.
    virtual void send(std::string bytes, std::function<void()> sent) = 0;
    // `bytes` of the client's data went upstream: the transport may let
    // that many more come (flow control).
    virtual void consumed(std::size_t bytes) = 0;
    // The connection is over (after the bytes already sent); nothing more
    // is sent either way.
    virtual void close(const std::string& reason) = 0;
};

// What happened, for the log and /metrics.
struct EgressEvents {
    std::function<void(const ConnectPlan&)>
        decided;  // once per connection that sent a head, or refused early
    std::function<void(const std::string& reason, std::uint64_t to_upstream, std::uint64_t to_guest)> closed;
};

struct EgressContext {
    std::shared_ptr<const Policy> policy;
    std::shared_ptr<const HostsMap> hosts;
    std::shared_ptr<EgressBudget> budget;  // the sandbox's, shared by its connections
    EgressEvents events;
};

class EgressConnection : public std::enable_shared_from_this<EgressConnection> {
public:
    static std::shared_ptr<EgressConnection> create(boost::asio::any_io_executor executor,
                                                    EgressContext context,
                                                    std::shared_ptr<GuestStream> guest);
    EgressConnection(const EgressConnection&) = delete;
    EgressConnection& operator=(const EgressConnection&) = delete;

    // Takes a slot in the budget (or refuses with 429) and waits for the head.
    void start();
    // Bytes the client sent.
    void client_data(std::string bytes);
    // The client closed its sending side (half-close: the upstream's answer
    // still comes back).
    void client_closed();
    // Ends the connection now (the sandbox is going away).
    void abort(const std::string& reason);

private:
    enum class Phase { head, connecting, relaying, done };

    EgressConnection(boost::asio::any_io_executor executor, EgressContext context,
                     std::shared_ptr<GuestStream> guest);
    void on_client_data(std::string bytes);
    void on_head_complete(std::size_t length);
    void refuse(int status, const std::string& reason, const std::string& response);
    void connect();
    void on_connected();
    // Client bytes after the head: a plain HTTP request's body only; credit
    // = whether the guest gets credit for them once written.
    void client_to_upstream(std::string bytes, bool credit);
    void queue_upstream(std::string bytes, std::size_t credit);
    void write_next();
    void read_upstream();
    void arm_deadline();
    void finish(const std::string& reason);

    boost::asio::any_io_executor executor_;
    EgressContext context_;
    std::shared_ptr<GuestStream> guest_;  // released by finish()
    boost::asio::ip::tcp::socket upstream_;
    boost::asio::steady_timer timer_;
    std::optional<EgressBudget::Slot> slot_;
    std::optional<ConnectionDeadline> deadline_;
    Phase phase_ = Phase::head;
    std::string head_;
    ConnectPlan plan_;
    std::string early_;    // client bytes after the head (credited with it)
    std::string pending_;  // client bytes that came while connecting (not credited yet)
    // Client bytes still allowed upstream: the body of a plain HTTP request;
    // unlimited for a tunnel.
    static constexpr std::uint64_t kUnlimited = UINT64_MAX;
    std::uint64_t allowance_ = 0;
    bool client_done_ = false;
    struct Write {
        std::string bytes;
        std::size_t credit;  // client bytes to credit the guest with once written
    };
    std::deque<Write> writes_;
    bool writing_ = false;
    std::array<char, 16384> read_buffer_{};
    std::uint64_t up_bytes_ = 0;
    std::uint64_t down_bytes_ = 0;
};

}  // namespace forkvm::http_proxy
