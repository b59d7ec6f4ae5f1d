#include "server/http_session.hpp"

#include <sys/socket.h>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/write.hpp>
#include <cerrno>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "server/access_log.hpp"
#include "server/query.hpp"
#include "server/request_id.hpp"
#include "server/server_context.hpp"

namespace forkvm::server {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using boost::system::error_code;
using pool::ErrorCode;
using pool::ServiceError;

namespace {

// A worker's view of a chunked response being written by the session.
class SessionStream final : public ResponseStream {
public:
    SessionStream(std::shared_ptr<HttpSession> session, std::string request_id,
                  std::chrono::milliseconds wait)
        : session_(std::move(session)), request_id_(std::move(request_id)), wait_(wait) {}

    bool begin(int status, std::string_view content_type) override {
        if (started_) return !failed_;
        started_ = true;
        const auto reason = http::obsolete_reason(static_cast<http::status>(status));
        return send(
            fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nTransfer-Encoding: chunked\r\n"
                        "Cache-Control: no-store\r\nX-Request-Id: {}\r\n\r\n",
                        status, std::string_view(reason.data(), reason.size()), content_type, request_id_));
    }

    bool write(std::string_view data) override {
        if (!started_) begin(200, "application/octet-stream");
        if (data.empty()) return !failed_;
        bytes_ += data.size();
        std::string chunk = fmt::format("{:x}\r\n", data.size());
        chunk.append(data);
        chunk.append("\r\n");
        return send(std::move(chunk));
    }

    bool started() const override { return started_; }
    std::uint64_t bytes() const noexcept { return bytes_; }

private:
    bool send(std::string bytes) {
        if (failed_) return false;
        auto done = std::make_shared<std::promise<bool>>();
        auto result = done->get_future();
        session_->stream_write(std::make_shared<std::string>(std::move(bytes)), done);
        // The session's write timer bounds the write; the margin covers an
        // io_context that was stopped under us.
        if (result.wait_for(wait_ + std::chrono::seconds(2)) != std::future_status::ready || !result.get()) {
            failed_ = true;
        }
        return !failed_;
    }

    std::shared_ptr<HttpSession> session_;
    std::string request_id_;
    std::chrono::milliseconds wait_;
    bool started_ = false;
    bool failed_ = false;
    std::uint64_t bytes_ = 0;
};

// JSON routes take application/json (or a +json type), and also
// application/x-www-form-urlencoded: that is what `curl -d '{...}'` sends
// when no type is given, and the body is parsed as JSON all the same.
bool is_json_content_type(std::string_view value) {
    const auto semi = value.find(';');
    std::string type(value.substr(0, semi));
    while (!type.empty() && type.back() == ' ') type.pop_back();
    for (auto& c : type) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return type == "application/json" || (type.starts_with("application/") && type.ends_with("+json")) ||
           type == "application/x-www-form-urlencoded";
}

// Boost 1.74's Beast speaks boost::string_view.
std::string_view sv(beast::string_view text) noexcept { return {text.data(), text.size()}; }

// Lingering close (as nginx's lingering_close): after a response that ends
// the connection early (413, 431, a malformed request) the rest of what the
// client is still sending is read and dropped for a while, so that its
// kernel does not turn our close into a reset that discards the response
// before the client reads it. Bounded in bytes and time.
constexpr std::size_t max_drain_bytes = 16 * 1024 * 1024;
constexpr std::chrono::milliseconds drain_time{2000};

// A malformed request (as opposed to a closed or timed-out connection).
bool is_parse_error(const error_code& ec) {
    return ec.category() == http::make_error_code(http::error::bad_target).category() &&
           ec != http::error::end_of_stream && ec != http::error::partial_message;
}

bool header_contains(std::string_view value, std::string_view token) {
    std::string lower(value);
    for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return lower.find(token) != std::string::npos;
}

}  // namespace

HttpSession::HttpSession(Socket socket, ServerContext& context)
    : stream_(std::move(socket), context.tls.get()), timer_(stream_.get_executor()), context_(context) {}

HttpSession::~HttpSession() {
    stop_.request_stop();
    context_.remove(this);
}

void HttpSession::start() {
    context_.add(this, shared_from_this());
    asio::dispatch(stream_.get_executor(), [self = shared_from_this()] {
        if (self->stream_.is_tls()) {
            self->tls_accept();
        } else {
            self->read_request();
        }
    });
}

// --- TLS ---------------------------------------------------------------------------

// Before the handshake, peek at the first byte: a TLS client starts with a
// handshake record (0x16); anything else is most likely plain HTTP sent to
// the HTTPS port, which gets a clear plain-text 400 instead of a TLS alert
// it could not read.
void HttpSession::tls_accept() {
    request_id_ = generate_request_id();
    started_ = std::chrono::steady_clock::now();
    arm_timer(context_.options.read_timeout);
    stream_.socket().async_wait(Socket::wait_read, [self = shared_from_this()](error_code ec) {
        if (self->closed_) return;
        unsigned char first = 0;
        const auto n = ec ? -1 : ::recv(self->stream_.socket().native_handle(), &first, 1, MSG_PEEK);
        if (n <= 0) {
            self->close_now("closed before the TLS handshake");
            return;
        }
        if (first != 0x16) {
            self->refuse_plain_http();
            return;
        }
        self->stream_.tls().async_handshake(boost::asio::ssl::stream_base::server, [self](error_code hs_ec) {
            self->disarm_timer();
            if (hs_ec) {
                spdlog::debug("[{}] TLS handshake failed: {}", self->request_id_, hs_ec.message());
                self->close_now("TLS handshake failed");
                return;
            }
            self->read_request();
        });
    });
}

void HttpSession::refuse_plain_http() {
    static const std::string body =
        R"({"error":{"code":"invalid_argument","message":"this port speaks HTTPS; plain HTTP was sent"}})";
    auto reply = std::make_shared<std::string>(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\n"
        "Cache-Control: no-store\r\nX-Request-Id: " +
        request_id_ + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body);
    method_ = "-";
    log_request(400, body.size(), "invalid_argument", "plain HTTP sent to the HTTPS port");
    context_.metrics.record_error("invalid_argument");
    arm_timer(context_.options.write_timeout);
    // Written to the TCP socket directly: the client speaks no TLS.
    asio::async_write(stream_.socket(), asio::buffer(*reply),
                      [self = shared_from_this(), reply](error_code, std::size_t) {
                          self->disarm_timer();
                          self->plain_graceful_close();
                      });
}

// --- timers ---------------------------------------------------------------------

void HttpSession::arm_timer(std::chrono::milliseconds timeout) {
    const auto generation = ++timer_generation_;
    timer_.expires_after(timeout);
    timer_.async_wait([self = shared_from_this(), generation](error_code ec) {
        if (ec || generation != self->timer_generation_ || self->closed_) return;
        spdlog::debug("[{}] connection timed out in phase {}", self->request_id_,
                      static_cast<int>(self->phase_));
        self->stop_.request_stop();
        self->close_now("timeout");
    });
}

void HttpSession::disarm_timer() {
    ++timer_generation_;
    timer_.cancel();
}

// --- reading ----------------------------------------------------------------------

void HttpSession::read_request() {
    if (closed_) return;
    if (context_.stopping.load() && buffer_.size() == 0) {
        close_now("server stopping");
        return;
    }
    phase_ = Phase::reading;
    request_id_.clear();
    method_.clear();
    target_for_log_.clear();
    route_template_ = "unmatched";
    route_.reset();
    owner_.clear();
    peer_gone_ = false;
    stop_ = std::stop_source{};
    file_parser_.reset();
    spool_.reset();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(
        std::min<std::size_t>(context_.options.max_header_bytes, std::numeric_limits<std::uint32_t>::max())));
    // The real per-route limit is set once the route is known (after the headers).
    parser_->body_limit(std::max({context_.options.max_body_bytes, context_.options.max_upload_bytes,
                                  context_.options.max_import_bytes}));
    arm_timer(context_.options.read_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](error_code ec, std::size_t) { self->on_header(ec); });
}

void HttpSession::on_header(error_code ec) {
    if (closed_) return;
    started_ = std::chrono::steady_clock::now();
    if (ec) {
        if (request_id_.empty()) request_id_ = generate_request_id();
        if (ec == http::error::header_limit) {
            respond_error(431, ServiceError(ErrorCode::payload_too_large, "request headers too large"), true);
        } else if (ec == http::error::body_limit) {
            respond_error(413, ServiceError(ErrorCode::payload_too_large, "request body too large"), true);
        } else if (is_parse_error(ec)) {
            respond_error(400, ServiceError::invalid_argument("request", "malformed HTTP request"), true);
        } else {
            close_now("read failed or peer closed");  // the client went away or the read timed out
        }
        return;
    }
    const auto& request = parser_->get();
    request_id_ = request_id_for(sv(request["X-Request-Id"]));
    method_ = std::string(request.method_string());
    const auto target = split_target(sv(request.target()));
    target_for_log_ = redact_target(sv(request.target()));
    keep_alive_ = request.keep_alive();

    const bool has_body = !parser_->is_done();
    const auto lookup = route(method_, target.path);
    if (!lookup.match) {
        if (lookup.path_known) {
            route_template_ = lookup.route_template;
            auto response = error_response_with_status(
                405, ServiceError::invalid_argument("method", method_ + " is not allowed here"), request_id_);
            response.headers.emplace_back("Allow", lookup.allow);
            response.close = has_body;
            finish(std::move(response), false, 0);
        } else {
            respond_error(404, ServiceError::not_found("no such route: " + std::string(target.path)),
                          has_body);
        }
        return;
    }
    route_ = lookup.match;
    route_template_ = route_->route_template;

    const auto authorization = sv(request[http::field::authorization]);
    if (route_->id == RouteId::metrics) {
        if (!context_.auth.metrics_allowed(authorization)) {
            auto response =
                error_response(ServiceError(ErrorCode::unauthorized, "admin key required"), request_id_);
            response.headers.emplace_back("WWW-Authenticate", "Bearer");
            response.close = has_body;
            finish(std::move(response), false, 0);
            return;
        }
    } else if (!route_is_public(route_->id)) {
        auto owner = context_.auth.owner_for(authorization);
        if (!owner) {
            auto response = error_response(
                ServiceError(ErrorCode::unauthorized, "missing or unknown API key"), request_id_);
            response.headers.emplace_back("WWW-Authenticate", "Bearer");
            response.close = has_body;
            finish(std::move(response), false, 0);
            return;
        }
        owner_ = std::move(*owner);
        if (const auto retry_after = context_.rate_limiter.take(owner_)) {
            respond_error(429,
                          ServiceError(ErrorCode::rate_limited, "too many requests for this API key",
                                       std::nullopt, *retry_after),
                          has_body);
            return;
        }
    }

    const bool upload = route_->id == RouteId::put_file;
    const bool import = route_->id == RouteId::import_snapshot;
    if (has_body && route_takes_json(route_->id)) {
        const auto content_type = sv(request[http::field::content_type]);
        if (!content_type.empty() && !is_json_content_type(content_type)) {
            respond_error(415,
                          ServiceError::invalid_argument("Content-Type", "the body must be application/json"),
                          true);
            return;
        }
    }
    const std::uint64_t limit = import   ? context_.options.max_import_bytes
                                : upload ? context_.options.max_upload_bytes
                                         : context_.options.max_body_bytes;
    const auto length = parser_->content_length();
    if (length && *length > limit) {
        respond_error(413,
                      ServiceError(ErrorCode::payload_too_large,
                                   fmt::format("the body is larger than {} bytes", limit), "body"),
                      true);
        return;
    }
    if (!has_body) {
        dispatch();
        return;
    }
    parser_->body_limit(limit);
    // Read before spool_body(): it moves the message (and `request`) out of parser_.
    const bool expect_continue = header_contains(sv(request[http::field::expect]), "100-continue");
    if (import && !spool_body(limit)) return;
    if (expect_continue) {
        auto continue_line = std::make_shared<std::string>("HTTP/1.1 100 Continue\r\n\r\n");
        asio::async_write(stream_, asio::buffer(*continue_line),
                          [self = shared_from_this(), continue_line](error_code write_ec, std::size_t) {
                              if (write_ec) {
                                  self->close_now("write of 100-continue failed");
                                  return;
                              }
                              self->read_body();
                          });
        return;
    }
    read_body();
}

// Snapshot imports can be gigabytes: their body goes to a file in the spool
// folder (Beast's file_body, after the headers were read into the ordinary
// parser), under a longer read deadline. The file is removed when the next
// request starts or the connection ends.
bool HttpSession::spool_body(std::uint64_t limit) {
    spool_.reset();
    // Named by the server (a client's X-Request-Id may repeat).
    const auto path = context_.options.spool_dir + "/import-" + generate_request_id();
    file_parser_.emplace(std::move(*parser_));
    parser_.reset();
    file_parser_->body_limit(limit);
    error_code ec;
    file_parser_->get().body().open(path.c_str(), boost::beast::file_mode::write_new, ec);
    if (ec) {
        spdlog::error("[{}] cannot create the spool file {}: {}", request_id_, path, ec.message());
        respond_error(
            503, ServiceError(ErrorCode::unavailable, "cannot store the upload now", std::nullopt, 5), true);
        return false;
    }
    spool_ = std::make_unique<SpoolFile>(path);
    arm_timer(std::max(context_.options.read_timeout, context_.options.import_read_timeout));
    return true;
}

void HttpSession::read_body() {
    if (file_parser_) {
        http::async_read(stream_, buffer_, *file_parser_,
                         [self = shared_from_this()](error_code ec, std::size_t) { self->on_body(ec); });
        return;
    }
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](error_code ec, std::size_t) { self->on_body(ec); });
}

const http::request_header<>& HttpSession::request_header() const {
    if (file_parser_) return file_parser_->get().base();
    return parser_->get().base();
}

void HttpSession::on_body(error_code ec) {
    if (closed_) return;
    if (ec) {
        // A spooled body that will not be used goes at once.
        const bool spooling = file_parser_.has_value();
        file_parser_.reset();
        spool_.reset();
        if (ec == http::error::body_limit) {
            respond_error(413, ServiceError(ErrorCode::payload_too_large, "request body too large", "body"),
                          true);
        } else if (spooling && ec.category() == boost::system::system_category() &&
                   (ec.value() == ENOSPC || ec.value() == EDQUOT || ec.value() == EFBIG ||
                    ec.value() == EIO)) {
            // Writing the spool file failed (disk full, ...): the client's bytes were fine.
            spdlog::error("[{}] spooling the upload failed: {}", request_id_, ec.message());
            respond_error(
                503, ServiceError(ErrorCode::unavailable, "cannot store the upload now", std::nullopt, 30),
                true);
        } else if (is_parse_error(ec)) {
            respond_error(400, ServiceError::invalid_argument("request", "malformed HTTP body"), true);
        } else {
            close_now("body read failed or peer closed");
        }
        return;
    }
    dispatch();
}

// --- handling ---------------------------------------------------------------------

void HttpSession::dispatch() {
    disarm_timer();  // no timeout while the handler runs; the peer watch covers a client that leaves
    phase_ = Phase::handling;
    auto request = std::make_shared<ApiRequest>();
    request->route = *route_;
    request->owner = owner_;
    request->request_id = request_id_;
    request->stop = stop_.get_token();
    const auto& header = request_header();
    request->accepts_ndjson = header_contains(sv(header[http::field::accept]), "application/x-ndjson");
    try {
        request->query = Query::parse(split_target(sv(header.target())).query);
    } catch (const ServiceError& error) {
        respond_error(400, error, false);
        return;
    }
    if (file_parser_) {
        file_parser_->get().body().close();
        request->body_file = spool_->path;
    } else {
        request->body = std::move(parser_->get().body());
    }

    auto self = shared_from_this();
    const bool queued = context_.workers.try_submit([self, request] {
        SessionStream stream(self, request->request_id, self->context_.options.write_timeout);
        Response response = self->context_.handlers.handle(*request, stream);
        const bool streamed = stream.started();
        const auto bytes = stream.bytes();
        asio::post(self->stream_.get_executor(),
                   [self, response = std::move(response), streamed, bytes]() mutable {
                       self->handler_done(std::move(response), streamed, bytes);
                   });
    });
    if (!queued) {
        respond_error(503, ServiceError(ErrorCode::unavailable, "server busy, retry later", std::nullopt, 1),
                      false);
        return;
    }
    watch_peer();
}

void HttpSession::watch_peer() {
    if (closed_ || watch_pending_) return;
    watch_pending_ = true;
    stream_.socket().async_wait(Socket::wait_read,
                                [self = shared_from_this()](error_code ec) { self->on_watch(ec); });
}

void HttpSession::on_watch(error_code ec) {
    watch_pending_ = false;
    if (!ec && phase_ == Phase::handling) {
        // Readiness can be stale (an edge for bytes a speculative read
        // already took), so peek: 0 = the client closed, EAGAIN = nothing
        // happened (watch again), data = a pipelined request (left for the
        // next read; disconnects are then no longer watched).
        char byte = 0;
        const auto n = ::recv(stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
        // Over TLS a client that closes sends a close_notify alert (record
        // type 0x15) before its FIN: that is a goodbye, not a pipelined request.
        const bool tls_alert = n > 0 && stream_.is_tls() && static_cast<unsigned char>(byte) == 0x15;
        if (n == 0 || tls_alert || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            peer_gone_ = true;
            spdlog::info("[{}] client disconnected; cancelling the request", request_id_);
            stop_.request_stop();
        } else if (n < 0 && !after_watch_) {
            watch_peer();
            return;
        }
    }
    if (after_watch_) {
        auto next = std::move(after_watch_);
        after_watch_ = nullptr;
        next();
    }
}

void HttpSession::handler_done(Response response, bool streamed, std::uint64_t streamed_bytes) {
    spool_.reset();  // the handler is done with a spooled body
    if (watch_pending_) {
        // Stop watching first: the next read must not race the watch.
        after_watch_ = [self = shared_from_this(), response = std::move(response), streamed,
                        streamed_bytes]() mutable {
            self->finish(std::move(response), streamed, streamed_bytes);
        };
        error_code ignored;
        stream_.socket().cancel(ignored);
        return;
    }
    finish(std::move(response), streamed, streamed_bytes);
}

void HttpSession::stream_write(std::shared_ptr<std::string> bytes, std::shared_ptr<std::promise<bool>> done) {
    asio::post(stream_.get_executor(), [self = shared_from_this(), bytes, done] {
        if (self->closed_ || self->peer_gone_) {
            done->set_value(false);
            return;
        }
        self->arm_timer(self->context_.options.write_timeout);
        asio::async_write(self->stream_, asio::buffer(*bytes),
                          [self, bytes, done](error_code ec, std::size_t) {
                              self->disarm_timer();
                              if (ec) {
                                  self->peer_gone_ = true;
                                  self->stop_.request_stop();
                              }
                              done->set_value(!ec);
                          });
    });
}

// --- writing ----------------------------------------------------------------------

void HttpSession::respond_error(int status, const ServiceError& error, bool close) {
    auto response = error_response_with_status(status, error, request_id_);
    response.close = close;
    finish(std::move(response), false, 0);
}

void HttpSession::finish(Response response, bool streamed, std::uint64_t streamed_bytes) {
    if (closed_) {
        log_request(streamed ? 200 : 499, streamed_bytes, response.error_code, response.error_message);
        return;
    }
    if (!response.error_code.empty()) context_.metrics.record_error(response.error_code);
    if (!streamed) {
        log_request(response.status, response.body.size(), response.error_code, response.error_message);
        write_response(std::move(response));
        return;
    }
    log_request(200, streamed_bytes, response.error_code, response.error_message);
    if (response.abort_stream || peer_gone_) {
        // No final chunk: the client sees a truncated body, never a clean end.
        close_now("stream aborted");
        return;
    }
    phase_ = Phase::writing;
    keep_alive_ = keep_alive_ && !context_.stopping.load();
    auto last_chunk = std::make_shared<std::string>("0\r\n\r\n");
    arm_timer(context_.options.write_timeout);
    asio::async_write(stream_, asio::buffer(*last_chunk),
                      [self = shared_from_this(), last_chunk](error_code ec, std::size_t) {
                          self->disarm_timer();
                          if (ec) {
                              self->close_now("final chunk write failed");
                              return;
                          }
                          self->after_response(self->keep_alive_);
                      });
}

void HttpSession::write_response(Response response) {
    phase_ = Phase::writing;
    auto message = std::make_shared<http::response<http::string_body>>();
    message->version(11);
    message->result(static_cast<unsigned>(response.status));
    message->set("X-Request-Id", request_id_);
    if (!response.content_type.empty()) message->set(http::field::content_type, response.content_type);
    for (const auto& [name, value] : response.headers) message->set(name, value);
    if (response.status >= 400) message->set(http::field::cache_control, "no-store");
    message->body() = std::move(response.body);
    const bool keep_alive = keep_alive_ && !response.close && !peer_gone_ && !context_.stopping.load();
    message->keep_alive(keep_alive);
    message->prepare_payload();
    if (response.status == 204) message->erase(http::field::content_length);
    response_keeper_ = message;
    arm_timer(context_.options.write_timeout);
    http::async_write(
        stream_, *message,
        [self = shared_from_this(), keep_alive, close = response.close](error_code ec, std::size_t) {
            self->disarm_timer();
            self->response_keeper_.reset();
            if (ec) {
                self->close_now("response write failed");
                return;
            }
            if (close) {
                self->graceful_close();
                return;
            }
            self->after_response(keep_alive);
        });
}

void HttpSession::after_response(bool keep_alive) {
    if (!keep_alive || context_.stopping.load()) {
        graceful_close();
        return;
    }
    read_request();
}

void HttpSession::log_request(int status, std::uint64_t bytes, const std::string& error_code,
                              const std::string& error_message) {
    const auto duration = std::chrono::steady_clock::now() - started_;
    context_.metrics.record_request(method_.empty() ? "-" : method_, route_template_, status);
    AccessLogEntry entry;
    entry.request_id = request_id_;
    entry.method = method_;
    entry.target = target_for_log_;
    entry.status = status;
    entry.bytes = bytes;
    entry.duration = std::chrono::duration_cast<std::chrono::microseconds>(duration);
    entry.owner = owner_;
    entry.error_code = error_code;
    entry.error_message = error_message;
    log_access(entry);
}

// --- closing ----------------------------------------------------------------------

void HttpSession::graceful_close() {
    if (closed_) return;
    if (!stream_.is_tls()) {
        plain_graceful_close();
        return;
    }
    // TLS: send close_notify (so the client knows the data is complete) and
    // wait briefly for the client's, then close.
    // wait briefly for the client's, then drain like plain HTTP (a client
    // still sending must not get a reset that loses the response).
    phase_ = Phase::closing;
    arm_timer(drain_time);
    stream_.tls().async_shutdown([self = shared_from_this()](error_code) {
        self->disarm_timer();
        self->plain_graceful_close();
    });
}

void HttpSession::plain_graceful_close() {
    if (closed_) return;
    phase_ = Phase::closing;
    // Half-close and drain briefly, so a client still sending (an oversized
    // body, huge headers) reads our response instead of a reset.
    error_code ignored;
    stream_.socket().shutdown(Socket::shutdown_send, ignored);
    arm_timer(drain_time);
    drain(std::make_shared<std::array<char, 65536>>(), 0);
}

void HttpSession::drain(std::shared_ptr<std::array<char, 65536>> scratch, std::size_t drained) {
    auto& buffer = *scratch;
    stream_.socket().async_read_some(asio::buffer(buffer),
                                     [self = shared_from_this(), scratch = std::move(scratch), drained](
                                         error_code ec, std::size_t n) mutable {
                                         if (ec || self->closed_ || drained + n > max_drain_bytes) {
                                             self->close_now("drain finished");
                                             return;
                                         }
                                         self->drain(std::move(scratch), drained + n);
                                     });
}

void HttpSession::close_now(std::string_view why) {
    if (closed_) return;
    spdlog::debug("[{}] closing the connection ({})", request_id_, why);
    closed_ = true;
    if (phase_ != Phase::handling) {
        // A half-received spooled body goes now (a running handler may still read it).
        file_parser_.reset();
        spool_.reset();
    }
    phase_ = Phase::closing;
    disarm_timer();
    error_code ignored;
    stream_.socket().shutdown(Socket::shutdown_both, ignored);
    stream_.socket().close(ignored);
}

void HttpSession::close_if_idle() {
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
        if (self->phase_ == Phase::reading && self->buffer_.size() == 0 && !self->file_parser_ &&
            (!self->parser_ || !self->parser_->got_some())) {
            self->close_now("idle at shutdown");
        }
    });
}

void HttpSession::force_close() {
    // Only on the session's executor: read_request() replaces stop_ there,
    // so touching it from this (foreign) thread would race.
    asio::post(stream_.get_executor(), [self = shared_from_this()] {
        self->stop_.request_stop();
        self->close_now("shutdown deadline");
    });
}

}  // namespace forkvm::server
