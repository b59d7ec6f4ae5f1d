#pragma once
// One client connection: reads requests (Boost.Beast parser with header and
// body limits), checks route, auth and content type on the io thread, runs
// the handler on the worker pool, and writes the response or stream back.
//
// Everything here runs on the connection's strand, except the
// ResponseStream calls, which come from a worker and post onto the strand.
//
// Timeouts: one timer per connection. Reading a request (headers and body)
// must finish within read_timeout from its first wait, each write within
// write_timeout; when the timer fires the socket is closed. While a handler
// runs there is no timeout, but the connection watches the socket: a client
// that closes it makes the request's stop token fire (an exec is killed).

#include <unistd.h>

#include <array>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/file_body.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>

#include "server/connection_stream.hpp"
#include "server/response.hpp"
#include "server/router.hpp"

namespace forkvm::server {

struct ServerContext;

class HttpSession : public std::enable_shared_from_this<HttpSession> {
public:
    using Socket = ConnectionStream::Socket;

    HttpSession(Socket socket, ServerContext& context);
    ~HttpSession();
    HttpSession(const HttpSession&) = delete;
    HttpSession& operator=(const HttpSession&) = delete;

    void start();

    // From stop(): close now if no request is in progress; otherwise the
    // connection closes after its current response.
    void close_if_idle();
    // From stop() at the deadline: cancel the handler, close the socket.
    void force_close();

    // Worker side of a streamed response (posts to the strand and waits).
    // ok=false once the client is gone or the write failed/timed out.
    void stream_write(std::shared_ptr<std::string> bytes, std::shared_ptr<std::promise<bool>> done);

private:
    enum class Phase { reading, handling, writing, closing };
    using Parser = boost::beast::http::request_parser<boost::beast::http::string_body>;
    using FileParser = boost::beast::http::request_parser<boost::beast::http::file_body>;
    // A request body spooled to disk; the file goes with this object.
    struct SpoolFile {
        explicit SpoolFile(std::string p) : path(std::move(p)) {}
        ~SpoolFile() { ::unlink(path.c_str()); }
        SpoolFile(const SpoolFile&) = delete;
        SpoolFile& operator=(const SpoolFile&) = delete;
        std::string path;
    };

    void tls_accept();
    void refuse_plain_http();
    void read_request();
    void on_header(boost::system::error_code ec);
    bool spool_body(std::uint64_t limit);
    void read_body();
    const boost::beast::http::request_header<>& request_header() const;
    void on_body(boost::system::error_code ec);
    void dispatch();
    void watch_peer();
    void on_watch(boost::system::error_code ec);
    void handler_done(Response response, bool streamed, std::uint64_t streamed_bytes);
    void finish(Response response, bool streamed, std::uint64_t streamed_bytes);
    void respond_error(int status, const pool::ServiceError& error, bool close);
    void write_response(Response response);
    void after_response(bool keep_alive);
    void log_request(int status, std::uint64_t bytes, const std::string& error_code,
                     const std::string& error_message);
    void graceful_close();
    void plain_graceful_close();
    void drain(std::shared_ptr<std::array<char, 65536>> scratch, std::size_t drained);
    void close_now(std::string_view why);

    void arm_timer(std::chrono::milliseconds timeout);
    void disarm_timer();

    ConnectionStream stream_;
    boost::asio::steady_timer timer_;
    std::uint64_t timer_generation_ = 0;
    ServerContext& context_;
    boost::beast::flat_buffer buffer_;
    std::optional<Parser> parser_;
    std::optional<FileParser> file_parser_;  // instead of parser_ for a spooled body
    std::unique_ptr<SpoolFile> spool_;
    std::shared_ptr<void> response_keeper_;  // the message being written
    Phase phase_ = Phase::reading;
    bool closed_ = false;

    // The current request.
    std::string request_id_;
    std::string method_;
    std::string target_for_log_;
    std::string_view route_template_ = "unmatched";
    std::optional<RouteMatch> route_;
    std::string owner_;
    std::chrono::steady_clock::time_point started_{};
    bool keep_alive_ = true;
    bool peer_gone_ = false;
    bool watch_pending_ = false;
    std::function<void()> after_watch_;
    std::stop_source stop_;
};

}  // namespace forkvm::server
