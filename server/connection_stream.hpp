#pragma once
// ConnectionStream: one client connection's byte stream, plain TCP or TLS
// over TCP, chosen per listener at accept time. It satisfies Asio's
// AsyncReadStream and AsyncWriteStream, so Beast's parser and serializer and
// asio::async_write run over either without HttpSession knowing which.
// Operations on the TCP socket itself (shutdown, close, readiness waits,
// MSG_PEEK) go through socket().

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <utility>
#include <variant>

namespace forkvm::server {

class ConnectionStream {
public:
    using Socket = boost::asio::ip::tcp::socket;
    using TlsStream = boost::asio::ssl::stream<Socket>;
    using executor_type = Socket::executor_type;

    // `tls` null: plain TCP. Otherwise the stream speaks TLS (after
    // handshake()) with that context, which must outlive the stream.
    ConnectionStream(Socket socket, boost::asio::ssl::context* tls) {
        if (tls != nullptr) {
            stream_.emplace<TlsStream>(std::move(socket), *tls);
        } else {
            stream_.emplace<Socket>(std::move(socket));
        }
    }

    [[nodiscard]] bool is_tls() const noexcept { return std::holds_alternative<TlsStream>(stream_); }
    executor_type get_executor() noexcept { return socket().get_executor(); }
    Socket& socket() noexcept {
        if (auto* tls = std::get_if<TlsStream>(&stream_)) return tls->next_layer();
        return std::get<Socket>(stream_);
    }
    // Only when is_tls().
    TlsStream& tls() { return std::get<TlsStream>(stream_); }

    template <class MutableBuffers, class Handler>
    void async_read_some(const MutableBuffers& buffers, Handler&& handler) {
        if (auto* tls = std::get_if<TlsStream>(&stream_)) {
            tls->async_read_some(buffers, std::forward<Handler>(handler));
        } else {
            std::get<Socket>(stream_).async_read_some(buffers, std::forward<Handler>(handler));
        }
    }

    template <class ConstBuffers, class Handler>
    void async_write_some(const ConstBuffers& buffers, Handler&& handler) {
        if (auto* tls = std::get_if<TlsStream>(&stream_)) {
            tls->async_write_some(buffers, std::forward<Handler>(handler));
        } else {
            std::get<Socket>(stream_).async_write_some(buffers, std::forward<Handler>(handler));
        }
    }

private:
    std::variant<std::monostate, Socket, TlsStream> stream_;
};

}  // namespace forkvm::server
