#pragma once
// The agent's half of the egress proxy (docs/egress.md, docs/agent-protocol.md
// "Proxy streams"): a TCP listener on the guest's loopback whose accepted
// connections become proxy streams on the channel. The agent decides
// nothing: it relays the client's bytes to the host within the host's
// credit and the host's bytes to the client, granting credit back as the
// client takes them. Part of the single-threaded server loop (server.cpp).

#include <poll.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "guest/agent/options.hpp"
#include "guest/agent/outbox.hpp"
#include "guest/protocol/messages.hpp"
#include "vmm/unique_fd.hpp"  // header-only, std-only: shared with the host

namespace forkvm::agent {

// Stream ids have the top bit set, so they never equal a request id the
// host picks (which count up from 1) in the outbox's per-id ordering.
inline constexpr std::uint32_t kProxyStreamIdBit = 0x80000000U;

class ProxyStreams {
public:
    ProxyStreams(const Options& options, Outbox& outbox) : opt_(options), outbox_(outbox) {}

    // Listens on 127.0.0.1:proxy_port (nothing when it is 0). On failure the
    // agent serves on without a proxy and says so on stderr.
    void listen();
    [[nodiscard]] bool listening() const noexcept { return static_cast<bool>(listener_); }

    // Adds the listener (while there is room for a stream) and each
    // client socket (to read: when the host granted credit and the bulk
    // queue has room; to write: when host data waits) to the poll set.
    void add_to_poll(std::vector<pollfd>& fds, bool bulk_room) const;
    // Handles a poll result if the fd is the listener's or a stream's;
    // false if it is not ours.
    bool handle(const pollfd& p);
    // Closes the sockets of streams that ended. Call after a poll round's
    // handling, so no fd number is reused while the round's results are
    // still being matched.
    void sweep();

    // Frames from the host for stream `id`. A violation (data beyond the
    // credit granted, data after the host's close) ends that stream only.
    void on_credit(std::uint32_t id, const proto::ProxyCredit& m);
    void on_data(std::uint32_t id, proto::ProxyData&& m);
    void on_close(std::uint32_t id, const proto::ProxyClose& m);

    // Ends every open stream as if its host had aborted it: the clients'
    // connections close, the host hears an abort for each.
    void end_all(const std::string& reason);
    // Closes every stream and the listener (the channel is gone).
    void shutdown();
    [[nodiscard]] std::size_t open_streams() const noexcept { return streams_.size(); }

private:
    struct Stream {
        UniqueFd fd;
        std::uint64_t send_credit = 0;  // bytes we may still send the host
        std::uint64_t recv_window = 0;  // bytes the host may still send us
        std::string to_client;          // host bytes not yet written to the client
        std::size_t to_client_off = 0;
        std::uint64_t written_uncredited = 0;  // written to the client, not yet granted back
        bool client_done = false;              // we sent proxy_close (the client stopped sending)
        bool abort_sent = false;               // that close, or a later one, was an abort
        bool host_done = false;                // the host sent proxy_close
        bool dead = false;                     // socket to be closed by sweep()
    };

    void accept_one();
    void read_client(std::uint32_t id, Stream& s);
    void write_client(std::uint32_t id, Stream& s);
    void close_from_client(std::uint32_t id, Stream& s, const std::string& reason);
    void end(std::uint32_t id, Stream& s, const std::string& reason);
    void maybe_finish(std::uint32_t id, Stream& s);

    const Options& opt_;
    Outbox& outbox_;
    UniqueFd listener_;
    std::map<std::uint32_t, Stream> streams_;
    std::uint32_t next_id_ = 0;
    std::vector<char> buffer_;
};

// The variables every exec gets (unless its request sets them) when the
// proxy listens: HTTP_PROXY, HTTPS_PROXY, http_proxy, https_proxy pointing
// at it, and NO_PROXY/no_proxy for loopback.
[[nodiscard]] std::vector<std::pair<std::string, std::string>> proxy_environment(std::uint16_t port);

}  // namespace forkvm::agent
