#include "pool/egress_bridge.hpp"

#include <algorithm>
#include <atomic>
#include <boost/asio/strand.hpp>
#include <deque>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace forkvm::pool {

// One stream: the GuestStream the relay writes to (through the agent, within
// the agent's credit) and the state of both ends.
class EgressBridge::Stream : public http_proxy::GuestStream {
public:
    Stream(const std::shared_ptr<EgressBridge>& bridge, std::uint32_t id, std::uint32_t agent_window)
        : bridge_(bridge), id_(id), agent_window_(agent_window) {}

    void send(std::string bytes, std::function<void()> sent) override {
        std::unique_lock lock(mu_);
        if (relay_done_) return;
        queue_.push_back({std::move(bytes), 0, std::move(sent)});
        flush(lock);
    }
    void consumed(std::size_t bytes) override {
        const std::lock_guard lock(mu_);
        if (agent_done_) return;
        our_window_ += bytes;
        to_agent(proto::ProxyCredit{static_cast<std::uint32_t>(bytes)});
    }
    void close(const std::string& reason) override {
        const auto bridge = bridge_.lock();
        {
            std::unique_lock lock(mu_);
            if (relay_done_ || !bridge) return;
            relay_done_ = true;
            close_reason_ = reason;
            flush(lock);  // the close goes after the bytes still queued
        }
        bridge->forget_if_done(id_);
    }

    // The agent granted more room: send what waits.
    void add_agent_credit(std::uint32_t bytes) {
        std::unique_lock lock(mu_);
        agent_window_ += bytes;
        flush(lock);
    }
    // Client bytes from the agent: false if they break its credit.
    bool take_client_bytes(std::size_t n) {
        const std::lock_guard lock(mu_);
        if (agent_done_ || n > our_window_) return false;
        our_window_ -= n;
        return true;
    }
    // The agent closed its side; with `abort` its client is gone, so what
    // still waits for the agent's credit is dropped and the close goes now.
    void agent_closed(bool abort) {
        std::unique_lock lock(mu_);
        agent_done_ = true;
        if (!abort) return;
        aborted_ = true;
        flush(lock);
    }
    // Lock-free: the bridge asks while holding its own lock.
    [[nodiscard]] bool done() const { return close_sent_ && agent_done_; }
    void set_connection(std::shared_ptr<http_proxy::EgressConnection> c) { connection_ = std::move(c); }
    [[nodiscard]] const std::shared_ptr<http_proxy::EgressConnection>& connection() const {
        return connection_;
    }

private:
    template <class M>
    bool to_agent(const M& message) {
        const auto bridge = bridge_.lock();
        return bridge && bridge->send_to_agent(id_, message);
    }
    vmm::ProxySend data_to_agent(const proto::ProxyData& frame) {
        const auto bridge = bridge_.lock();
        return bridge ? bridge->data_to_agent(id_, frame) : vmm::ProxySend::unusable;
    }

public:
    // The agent channel has room again: send what waits.
    void resume() {
        std::unique_lock lock(mu_);
        flush(lock);
    }

private:
    struct Pending {
        std::string bytes;
        std::size_t offset;
        std::function<void()> sent;
    };

    // Sends queued bytes within the agent's window (in frames of at most
    // 32 KiB), then the close once nothing is queued. Frames go out under
    // the stream's lock, so two threads (the relay's, the agent reader's
    // granting credit) never reorder them; the relay hears `sent` after the
    // lock is released, once a chunk has gone entirely.
    void flush(std::unique_lock<std::mutex>& lock) {
        std::vector<std::function<void()>> done;
        if (aborted_) queue_.clear();
        while (!queue_.empty() && agent_window_ > 0) {
            Pending& p = queue_.front();
            const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(
                {p.bytes.size() - p.offset, agent_window_, std::uint64_t{32 * 1024}}));
            proto::ProxyData frame;
            frame.data.assign(p.bytes.begin() + static_cast<std::ptrdiff_t>(p.offset),
                              p.bytes.begin() + static_cast<std::ptrdiff_t>(p.offset + n));
            const vmm::ProxySend result = data_to_agent(frame);
            // The channel's queue is full (other streams, or a guest slow to
            // read): this waits for on_proxy_writable, the relay meanwhile
            // reading nothing more from the upstream.
            if (result == vmm::ProxySend::backlogged) break;
            if (result == vmm::ProxySend::unusable) {
                // The channel is gone: nothing more reaches the client.
                aborted_ = true;
                queue_.clear();
                if (connection_) connection_->abort("the agent channel is closed");
                break;
            }
            p.offset += n;
            agent_window_ -= n;
            if (p.offset == p.bytes.size()) {
                done.push_back(std::move(p.sent));
                queue_.pop_front();
            }
        }
        if (relay_done_ && queue_.empty() && !close_sent_) {
            close_sent_ = true;
            // Not an abort: the agent lets its client read everything first.
            to_agent(proto::ProxyClose{close_reason_, false});
        }
        lock.unlock();
        for (auto& f : done)
            if (f) f();
        lock.lock();
    }

    std::weak_ptr<EgressBridge> bridge_;  // the relay may outlive the sandbox
    const std::uint32_t id_;
    mutable std::mutex mu_;
    std::uint64_t agent_window_;          // bytes the agent still takes from us
    std::uint64_t our_window_ = kWindow;  // client bytes we still take from the agent
    std::deque<Pending> queue_;
    bool relay_done_ = false;
    bool aborted_ = false;  // the agent's client is gone: nothing more is sent but our close
    std::atomic<bool> close_sent_ = false;
    std::atomic<bool> agent_done_ = false;
    std::string close_reason_;
    std::shared_ptr<http_proxy::EgressConnection> connection_;
};

EgressBridge::EgressBridge(vmm::AgentClient& agent, boost::asio::any_io_executor executor,
                           http_proxy::EgressContext context)
    : agent_(agent), executor_(std::move(executor)), context_(std::move(context)) {}

EgressBridge::~EgressBridge() { close_all("the sandbox went away"); }

void EgressBridge::on_proxy_open(std::uint32_t stream, std::uint32_t initial_credit) {
    std::shared_ptr<Stream> s;
    {
        const std::lock_guard lock(mu_);
        if (closed_ || streams_.count(stream) != 0) {
            // A duplicate id, or a sandbox going away: end it at once.
            (void)agent_.send_proxy(stream, proto::ProxyClose{"stream refused", true});  // under mu_
            return;
        }
        if (streams_.size() >= kMaxStreams) {
            // Finished streams stay until the agent closes them too; a guest
            // that never does cannot make the host keep more than this.
            (void)agent_.send_proxy(stream, proto::ProxyClose{"too many proxy streams", true});
            return;
        }
        s = std::make_shared<Stream>(shared_from_this(), stream, initial_credit);
        // One strand per connection: its handlers never run at once, on
        // however many threads the executor's context runs.
        s->set_connection(
            http_proxy::EgressConnection::create(boost::asio::make_strand(executor_), context_, s));
        streams_[stream] = s;
    }
    // The agent hears of its credit before anything the relay sends (a
    // refusal's close included).
    send_to_agent(stream, proto::ProxyCredit{kWindow});
    s->connection()->start();
}

std::shared_ptr<EgressBridge::Stream> EgressBridge::find(std::uint32_t stream) {
    const std::lock_guard lock(mu_);
    const auto it = streams_.find(stream);
    return it == streams_.end() ? nullptr : it->second;
}

void EgressBridge::on_proxy_data(std::uint32_t stream, proto::Bytes data) {
    const std::shared_ptr<Stream> s = find(stream);
    if (!s) {
        // Data on a stream this host does not have: one the guest had open
        // when it was forked or snapshotted (its connection stayed with the
        // source), or a confused agent. The agent sends no data after its
        // own close, so this is no late frame of a forgotten stream: the
        // client is told at once instead of waiting.
        (void)send_to_agent(stream, proto::ProxyClose{"no such proxy stream on this host", true});
        return;
    }
    if (!s->take_client_bytes(data.size())) {
        // Beyond the credit we granted: that stream ends, nothing else does.
        s->agent_closed(true);
        s->connection()->abort("the guest sent beyond its credit on the proxy stream");
        return;
    }
    s->connection()->client_data(std::string(data.begin(), data.end()));
}

void EgressBridge::on_proxy_credit(std::uint32_t stream, std::uint32_t bytes) {
    // Credit may come after this host closed and forgot the stream (the
    // agent granted it before our close arrived): ignored.
    const std::shared_ptr<Stream> s = find(stream);
    if (!s) return;
    s->add_agent_credit(bytes);
    forget_if_done(stream);  // the credit may have let our close go
}

void EgressBridge::on_proxy_close(std::uint32_t stream, const proto::ProxyClose& close) {
    std::shared_ptr<Stream> s;
    {
        const std::lock_guard lock(mu_);
        const auto it = streams_.find(stream);
        if (it == streams_.end()) return;
        s = it->second;
    }
    s->agent_closed(close.abort);
    if (close.abort) {
        s->connection()->abort("the guest's client went away: " + close.reason);
    } else {
        s->connection()->client_closed();
    }
    forget_if_done(stream);
}

void EgressBridge::forget_if_done(std::uint32_t stream) {
    std::function<void()> on_idle;
    {
        const std::lock_guard lock(mu_);
        const auto it = streams_.find(stream);
        if (it == streams_.end() || !it->second->done()) return;
        streams_.erase(it);
        if (streams_.empty() && !closed_) on_idle = on_idle_;
    }
    if (on_idle) on_idle();
}

void EgressBridge::on_proxy_writable() {
    std::vector<std::shared_ptr<Stream>> streams;
    {
        const std::lock_guard lock(mu_);
        for (const auto& [id, s] : streams_) streams.push_back(s);
    }
    for (const auto& s : streams) s->resume();
}

void EgressBridge::set_on_idle(std::function<void()> on_idle) {
    const std::lock_guard lock(mu_);
    on_idle_ = std::move(on_idle);
}

void EgressBridge::close_all(const std::string& reason) {
    std::map<std::uint32_t, std::shared_ptr<Stream>> streams;
    {
        const std::lock_guard lock(mu_);
        closed_ = true;
        on_idle_ = nullptr;
        streams.swap(streams_);
    }
    for (auto& [id, s] : streams) s->connection()->abort(reason);
}

std::size_t EgressBridge::open_streams() const {
    const std::lock_guard lock(mu_);
    return streams_.size();
}

}  // namespace forkvm::pool
