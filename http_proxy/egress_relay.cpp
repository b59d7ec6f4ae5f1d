#include "http_proxy/egress_relay.hpp"

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <utility>

namespace forkvm::http_proxy {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

tcp::endpoint endpoint_of(const IpAddress& address, std::uint16_t port) {
    if (address.is_v4()) return {asio::ip::address_v4(address.v4_value()), port};
    asio::ip::address_v6::bytes_type bytes{};
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = address.bytes()[i];
    return {asio::ip::address_v6(bytes), port};
}

}  // namespace

std::shared_ptr<EgressConnection> EgressConnection::create(asio::any_io_executor executor,
                                                           EgressContext context,
                                                           std::shared_ptr<GuestStream> guest) {
    return std::shared_ptr<EgressConnection>(
        new EgressConnection(std::move(executor), std::move(context), std::move(guest)));
}

EgressConnection::EgressConnection(asio::any_io_executor executor, EgressContext context,
                                   std::shared_ptr<GuestStream> guest)
    : executor_(executor),
      context_(std::move(context)),
      guest_(std::move(guest)),
      upstream_(executor),
      timer_(executor) {}

void EgressConnection::start() {
    asio::post(executor_, [self = shared_from_this()] {
        self->slot_ = self->context_.budget->open();
        if (!self->slot_) {
            self->refuse(429, self->context_.budget->connections_refusal(), "");
            return;
        }
        self->deadline_.emplace(self->context_.policy->limits(), ConnectionDeadline::Clock::now());
        self->arm_deadline();
    });
}

void EgressConnection::client_data(std::string bytes) {
    asio::post(executor_, [self = shared_from_this(), bytes = std::move(bytes)]() mutable {
        self->on_client_data(std::move(bytes));
    });
}

void EgressConnection::client_closed() {
    asio::post(executor_, [self = shared_from_this()] {
        self->client_done_ = true;
        if (self->phase_ == Phase::head) {
            self->finish("the client closed before sending a complete request");
        } else if (self->phase_ == Phase::relaying && self->writes_.empty() && !self->writing_) {
            boost::system::error_code ec;
            self->upstream_.shutdown(tcp::socket::shutdown_send, ec);
        }
    });
}

void EgressConnection::abort(const std::string& reason) {
    asio::post(executor_, [self = shared_from_this(), reason] { self->finish(reason); });
}

void EgressConnection::on_client_data(std::string bytes) {
    if (phase_ == Phase::done || bytes.empty()) return;
    if (!context_.budget->spend(bytes.size())) return finish(context_.budget->bytes_refusal());
    deadline_->activity(ConnectionDeadline::Clock::now());
    if (phase_ == Phase::head) {
        head_ += bytes;
        guest_->consumed(bytes.size());
        const HeadScan scan = find_head_end(head_);
        switch (scan.status) {
            case HeadStatus::incomplete: return;
            case HeadStatus::request_line_too_long: return refuse(414, "the request line is too long", "");
            case HeadStatus::too_large: return refuse(431, "the request head is too large", "");
            case HeadStatus::complete: return on_head_complete(scan.length);
        }
        return;
    }
    if (phase_ == Phase::relaying || phase_ == Phase::connecting) client_to_upstream(std::move(bytes), true);
}

void EgressConnection::on_head_complete(std::size_t length) {
    plan_ = plan_connection(std::string_view(head_).substr(0, length), *context_.policy, *context_.hosts);
    if (context_.events.decided) context_.events.decided(plan_);
    if (!plan_.allowed()) return refuse(plan_.status, plan_.reason, plan_.refusal);
    early_ = head_.substr(length);
    head_.clear();
    allowance_ = plan_.kind == RequestKind::connect ? kUnlimited : plan_.body_bytes;
    connect();
}

void EgressConnection::refuse(int status, const std::string& reason, const std::string& response) {
    if (response.empty()) {
        // Refused before a plan was made: the decision is reported here.
        ConnectPlan refused;
        refused.status = status;
        refused.reason = reason;
        refused.refusal = proxy_response(status, reason);
        if (context_.events.decided) context_.events.decided(refused);
        guest_->send(refused.refusal, [] {});
    } else {
        guest_->send(response, [] {});
    }
    finish(reason);
}

void EgressConnection::connect() {
    phase_ = Phase::connecting;
    upstream_.async_connect(endpoint_of(*plan_.address, plan_.port),
                            [self = shared_from_this()](const boost::system::error_code& ec) {
                                if (self->phase_ == Phase::done) return;
                                if (ec) {
                                    const std::string reason =
                                        "cannot connect to " + self->plan_.address->to_string() + " port " +
                                        std::to_string(self->plan_.port) + ": " + ec.message();
                                    self->guest_->send(proxy_response(502, reason), [] {});
                                    return self->finish(reason);
                                }
                                self->on_connected();
                            });
}

void EgressConnection::on_connected() {
    phase_ = Phase::relaying;
    deadline_->activity(ConnectionDeadline::Clock::now());
    if (!plan_.to_client.empty()) guest_->send(plan_.to_client, [] {});
    if (!plan_.to_upstream.empty()) queue_upstream(plan_.to_upstream, 0);
    // What followed the head was credited with it; what came while
    // connecting is credited once written.
    client_to_upstream(std::exchange(early_, {}), false);
    client_to_upstream(std::exchange(pending_, {}), true);
    if (client_done_ && writes_.empty()) {
        // The client half-closed while we connected, with nothing to send.
        boost::system::error_code ignored;
        upstream_.shutdown(tcp::socket::shutdown_send, ignored);
    }
    read_upstream();
}

void EgressConnection::client_to_upstream(std::string bytes, bool credit) {
    if (bytes.empty()) return;
    if (phase_ == Phase::connecting) {
        (credit ? pending_ : early_) += bytes;
        return;
    }
    // A plain HTTP request's body only: nothing after it goes upstream.
    const std::uint64_t take = std::min<std::uint64_t>(bytes.size(), allowance_);
    if (allowance_ != kUnlimited) allowance_ -= take;
    if (take < bytes.size()) {
        if (credit) guest_->consumed(bytes.size() - static_cast<std::size_t>(take));
        bytes.resize(static_cast<std::size_t>(take));
    }
    const std::size_t size = bytes.size();
    if (size != 0) queue_upstream(std::move(bytes), credit ? size : 0);
}

void EgressConnection::queue_upstream(std::string bytes, std::size_t credit) {
    up_bytes_ += bytes.size();
    writes_.push_back({std::move(bytes), credit});
    write_next();
}

void EgressConnection::write_next() {
    if (writing_ || writes_.empty() || phase_ != Phase::relaying) return;
    writing_ = true;
    asio::async_write(upstream_, asio::buffer(writes_.front().bytes),
                      [self = shared_from_this()](const boost::system::error_code& ec, std::size_t) {
                          self->writing_ = false;
                          if (self->phase_ == Phase::done) return;
                          if (ec) return self->finish("writing to the upstream failed: " + ec.message());
                          if (self->writes_.front().credit != 0)
                              self->guest_->consumed(self->writes_.front().credit);
                          self->writes_.pop_front();
                          self->deadline_->activity(ConnectionDeadline::Clock::now());
                          if (self->writes_.empty() && self->client_done_) {
                              boost::system::error_code ignored;
                              self->upstream_.shutdown(tcp::socket::shutdown_send, ignored);
                          }
                          self->write_next();
                      });
}

void EgressConnection::read_upstream() {
    upstream_.async_read_some(asio::buffer(read_buffer_), [self = shared_from_this()](
                                                              const boost::system::error_code& ec,
                                                              std::size_t n) {
        if (self->phase_ == Phase::done) return;
        if (ec) {
            return self->finish(ec == asio::error::eof ? "the upstream closed the connection"
                                                       : "reading from the upstream failed: " + ec.message());
        }
        if (!self->context_.budget->spend(n)) return self->finish(self->context_.budget->bytes_refusal());
        self->down_bytes_ += n;
        self->deadline_->activity(ConnectionDeadline::Clock::now());
        // The next read waits until the transport took these bytes.
        self->guest_->send(std::string(self->read_buffer_.data(), n), [weak = self->weak_from_this()] {
            if (auto me = weak.lock())
                asio::post(me->executor_, [me] {
                    if (me->phase_ == Phase::relaying) me->read_upstream();
                });
        });
    });
}

void EgressConnection::arm_deadline() {
    if (phase_ == Phase::done) return;
    timer_.expires_at(deadline_->deadline());
    timer_.async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
        if (ec || self->phase_ == Phase::done) return;
        if (auto reason = self->deadline_->expired(ConnectionDeadline::Clock::now())) {
            if (self->phase_ == Phase::head) {
                return self->refuse(408, *reason, "");  // no head in time: a refusal, counted as one
            }
            if (self->phase_ == Phase::connecting) {
                self->guest_->send(proxy_response(504, *reason), [] {});
            }
            return self->finish(*reason);
        }
        self->arm_deadline();
    });
}

void EgressConnection::finish(const std::string& reason) {
    if (phase_ == Phase::done) return;
    phase_ = Phase::done;
    timer_.cancel();
    boost::system::error_code ignored;
    upstream_.close(ignored);
    slot_.reset();  // the budget is free again before anyone hears of the close
    if (context_.events.closed) context_.events.closed(reason, up_bytes_, down_bytes_);
    // Nothing uses the guest stream after this; letting go of it breaks the
    // cycle with a stream that holds this connection (pool::EgressBridge).
    const std::shared_ptr<GuestStream> guest = std::move(guest_);
    guest->close(reason);
}

}  // namespace forkvm::http_proxy
