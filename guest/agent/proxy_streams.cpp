#include "guest/agent/proxy_streams.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <netinet/in.h>

namespace forkvm::agent {

void ProxyStreams::listen() {
    if (opt_.proxy_port == 0) return;
    UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    const int one = 1;
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(opt_.proxy_port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (!fd || ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        ::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd.get(), 64) != 0) {
        std::fprintf(stderr, "forkvm-agent: egress proxy on 127.0.0.1:%u not available: %s\n",
                     static_cast<unsigned>(opt_.proxy_port), std::strerror(errno));
        return;
    }
    listener_ = std::move(fd);
    buffer_.resize(opt_.bulk_chunk);
}

void ProxyStreams::add_to_poll(std::vector<pollfd>& fds, bool bulk_room) const {
    if (listener_ && streams_.size() < opt_.max_proxy_streams)
        fds.push_back(pollfd{listener_.get(), POLLIN, 0});
    for (const auto& [id, s] : streams_) {
        if (s.dead || !s.fd) continue;
        short events = 0;
        if (!s.client_done && s.send_credit > 0 && bulk_room) events |= POLLIN;
        if (s.to_client_off < s.to_client.size()) events |= POLLOUT;
        if (events != 0) fds.push_back(pollfd{s.fd.get(), events, 0});
    }
}

bool ProxyStreams::handle(const pollfd& p) {
    if (listener_ && p.fd == listener_.get()) {
        if ((p.revents & POLLIN) != 0) accept_one();
        return true;
    }
    for (auto& [id, s] : streams_) {
        if (s.dead || s.fd.get() != p.fd) continue;
        // An error or hang-up is reported even when not asked for: with host
        // bytes waiting, the write finds out (and ends the stream), so the
        // loop never spins on it.
        if ((p.revents & (POLLOUT | POLLERR | POLLHUP)) != 0 && s.to_client_off < s.to_client.size())
            write_client(id, s);
        if (!s.dead && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0 && !s.client_done) read_client(id, s);
        return true;
    }
    return false;
}

void ProxyStreams::accept_one() {
    UniqueFd fd(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd) return;  // EAGAIN, or a client that already left
    std::uint32_t id = 0;
    do {
        id = kProxyStreamIdBit | (next_id_++ & ~kProxyStreamIdBit);
    } while (streams_.count(id) != 0);
    Stream& s = streams_[id];
    s.fd = std::move(fd);
    s.recv_window = opt_.proxy_window;
    outbox_.control(id, proto::ProxyOpen{opt_.proxy_window});
}

void ProxyStreams::read_client(std::uint32_t id, Stream& s) {
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(buffer_.size(), s.send_credit));
    if (want == 0) return;
    const ssize_t n = ::read(s.fd.get(), buffer_.data(), want);
    if (n > 0) {
        proto::ProxyData data;
        data.data.assign(buffer_.begin(), buffer_.begin() + n);
        s.send_credit -= static_cast<std::uint64_t>(n);
        outbox_.bulk(id, data);
    } else if (n == 0) {
        close_from_client(id, s, "the client closed its side");
    } else if (errno != EAGAIN && errno != EINTR) {
        end(id, s, std::string("the client's connection failed: ") + std::strerror(errno));
    }
}

void ProxyStreams::write_client(std::uint32_t id, Stream& s) {
    while (s.to_client_off < s.to_client.size()) {
        const ssize_t n = ::send(s.fd.get(), s.to_client.data() + s.to_client_off,
                                 s.to_client.size() - s.to_client_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return end(id, s, std::string("writing to the client failed: ") + std::strerror(errno));
        }
        s.to_client_off += static_cast<std::size_t>(n);
        s.written_uncredited += static_cast<std::uint64_t>(n);
    }
    const bool drained = s.to_client_off == s.to_client.size();
    if (drained) {
        s.to_client.clear();
        s.to_client_off = 0;
    }
    // Credit back in batches: half a window, or whatever was written once
    // the client took everything.
    if (!s.host_done && s.written_uncredited > 0 &&
        (drained || s.written_uncredited >= opt_.proxy_window / 2)) {
        const auto grant = static_cast<std::uint32_t>(s.written_uncredited);
        s.recv_window += grant;
        s.written_uncredited = 0;
        outbox_.control(id, proto::ProxyCredit{grant});
    }
    maybe_finish(id, s);
}

void ProxyStreams::close_from_client(std::uint32_t id, Stream& s, const std::string& reason) {
    if (s.client_done) return;
    s.client_done = true;
    outbox_.control(id, proto::ProxyClose{reason, false});
    maybe_finish(id, s);
}

void ProxyStreams::end(std::uint32_t id, Stream& s, const std::string& reason) {
    // Also after a half-close: the host must learn the client is gone, or
    // it would wait for credit that never comes.
    if (!s.abort_sent) outbox_.control(id, proto::ProxyClose{reason, true});
    s.abort_sent = true;
    s.client_done = true;
    s.to_client.clear();
    s.to_client_off = 0;
    s.dead = true;
}

void ProxyStreams::maybe_finish(std::uint32_t id, Stream& s) {
    // The host is done and the client has all its bytes: close the client's
    // connection (and our side of the stream, if still open).
    if (!s.host_done || s.to_client_off < s.to_client.size() || s.dead) return;
    ::shutdown(s.fd.get(), SHUT_RDWR);
    if (!s.client_done) outbox_.control(id, proto::ProxyClose{"the host closed the stream", false});
    s.client_done = true;
    s.dead = true;
}

void ProxyStreams::on_credit(std::uint32_t id, const proto::ProxyCredit& m) {
    const auto it = streams_.find(id);
    if (it == streams_.end() || it->second.client_done) return;  // ended here meanwhile
    it->second.send_credit += m.bytes;
}

void ProxyStreams::on_data(std::uint32_t id, proto::ProxyData&& m) {
    const auto it = streams_.find(id);
    if (it == streams_.end()) return;
    Stream& s = it->second;
    if (s.host_done || m.data.size() > s.recv_window) {
        s.host_done = true;  // a host that breaks the protocol gets no more of this stream
        return end(id, s, "the host sent data beyond its credit or after its close");
    }
    s.recv_window -= m.data.size();
    if (s.dead) return;  // the client is gone; the host hears of it from our close
    s.to_client.append(m.data.begin(), m.data.end());
    write_client(id, s);
}

void ProxyStreams::on_close(std::uint32_t id, const proto::ProxyClose& m) {
    const auto it = streams_.find(id);
    if (it == streams_.end()) return;
    Stream& s = it->second;
    s.host_done = true;
    if (m.abort) return end(id, s, "the host ended the stream: " + m.reason);
    maybe_finish(id, s);
}

void ProxyStreams::sweep() {
    for (auto it = streams_.begin(); it != streams_.end();) {
        Stream& s = it->second;
        if (s.dead) s.fd.reset();
        // Forgotten once both sides sent their close.
        if (s.dead && s.client_done && s.host_done) {
            it = streams_.erase(it);
        } else {
            ++it;
        }
    }
}

void ProxyStreams::end_all(const std::string& reason) {
    for (auto& [id, s] : streams_) {
        if (s.dead) continue;
        s.host_done = true;  // nothing more will come from a host that never had it
        end(id, s, reason);
    }
}

void ProxyStreams::shutdown() {
    streams_.clear();
    listener_.reset();
}

std::vector<std::pair<std::string, std::string>> proxy_environment(std::uint16_t port) {
    const std::string url = "http://127.0.0.1:" + std::to_string(port);
    const std::string local = "localhost,127.0.0.1,::1";
    return {{"HTTP_PROXY", url},  {"HTTPS_PROXY", url}, {"http_proxy", url},
            {"https_proxy", url}, {"NO_PROXY", local},  {"no_proxy", local}};
}

}  // namespace forkvm::agent
