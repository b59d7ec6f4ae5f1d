#include "tests/kvm/http_client.hpp"

#include <sys/socket.h>
#include <sys/time.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <fstream>
#include <optional>
#include <stdexcept>

namespace forkvm::test {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

constexpr std::uint64_t kMaxResponseBody = 512ULL << 20U;

std::string lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

// Blocking socket calls give up after `timeout` (SO_RCVTIMEO / SO_SNDTIMEO).
void set_timeouts(tcp::socket& socket, std::chrono::seconds timeout) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count());
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

http::request<http::string_body> to_beast(const HttpRequest& request, const std::string& host) {
    http::request<http::string_body> req;
    req.method_string(request.method);
    req.target(request.target);
    req.version(11);
    req.set(http::field::host, host);
    for (const auto& [name, value] : request.headers) req.set(name, value);
    if (!request.body.empty() || request.method == "POST" || request.method == "PUT") {
        req.body() = request.body;
        req.prepare_payload();
    }
    return req;
}

template <class Body>
void copy_head(const http::response<Body>& res, HttpResponse& out) {
    out.status = static_cast<int>(res.result_int());
    for (const auto& field : res) {
        out.headers[lower(std::string(field.name_string()))] = std::string(field.value());
    }
}

}  // namespace

struct HttpClient::Impl {
    asio::io_context io;
    std::optional<tcp::socket> socket;
    beast::flat_buffer buffer;
};

nlohmann::json HttpResponse::json() const { return nlohmann::json::parse(body); }

std::string HttpResponse::header(const std::string& name) const {
    auto it = headers.find(lower(name));
    return it == headers.end() ? std::string() : it->second;
}

std::string HttpResponse::error_code() const {
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (!j.is_object() || !j.contains("error") || !j["error"].is_object()) return {};
    return j["error"].value("code", "");
}

std::string HttpResponse::error_field() const {
    auto j = nlohmann::json::parse(body, nullptr, false);
    if (!j.is_object() || !j.contains("error") || !j["error"].is_object()) return {};
    return j["error"].value("field", "");
}

HttpClient::HttpClient(std::string host, std::uint16_t port)
    : host_(std::move(host)), port_(port), impl_(std::make_unique<Impl>()) {}

HttpClient::~HttpClient() = default;

HttpResponse HttpClient::send(const HttpRequest& request, std::chrono::seconds timeout) {
    for (int attempt = 0;; ++attempt) {
        if (!impl_->socket) {
            impl_->socket.emplace(impl_->io);
            impl_->socket->connect(tcp::endpoint(asio::ip::make_address(host_), port_));
            impl_->buffer.clear();
        }
        set_timeouts(*impl_->socket, timeout);
        beast::error_code ec;
        auto req = to_beast(request, host_);
        http::write(*impl_->socket, req, ec);
        http::response_parser<http::string_body> parser;
        parser.body_limit(kMaxResponseBody);
        if (!ec) http::read(*impl_->socket, impl_->buffer, parser, ec);
        if (ec) {
            impl_->socket.reset();
            // A kept-alive connection the server closed meanwhile: once more on a new one.
            if (attempt == 0 && (ec == http::error::end_of_stream || ec == asio::error::connection_reset ||
                                 ec == asio::error::broken_pipe)) {
                continue;
            }
            throw std::runtime_error(request.method + " " + request.target + ": " + ec.message());
        }
        const auto& res = parser.get();
        HttpResponse out;
        copy_head(res, out);
        out.body = res.body();
        if (!res.keep_alive()) impl_->socket.reset();
        record(request, out);
        return out;
    }
}

HttpResponse HttpClient::stream(const HttpRequest& request,
                                const std::function<bool(const std::string&)>& on_chunk,
                                std::chrono::seconds timeout) {
    tcp::socket socket(impl_->io);
    socket.connect(tcp::endpoint(asio::ip::make_address(host_), port_));
    set_timeouts(socket, timeout);
    auto req = to_beast(request, host_);
    http::write(socket, req);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(kMaxResponseBody);
    http::read_header(socket, buffer, parser);
    HttpResponse out;
    copy_head(parser.get(), out);
    std::size_t delivered = 0;
    std::string lines;  // for the recorder: complete NDJSON lines
    while (!parser.is_done()) {
        beast::error_code ec;
        http::read_some(socket, buffer, parser, ec);
        if (ec) throw std::runtime_error("stream " + request.target + ": " + ec.message());
        const std::string& body = parser.get().body();
        if (body.size() > delivered) {
            std::string piece = body.substr(delivered);
            delivered = body.size();
            lines += piece;
            if (!on_chunk(piece)) break;
        }
    }
    HttpResponse recorded = out;
    for (std::size_t start = 0; start < lines.size();) {
        auto end = lines.find('\n', start);
        if (end == std::string::npos) break;
        recorded.body = lines.substr(start, end - start);
        record(request, recorded);
        start = end + 1;
    }
    return out;
}

std::string HttpClient::raw_exchange(const std::string& bytes, std::chrono::seconds timeout) {
    tcp::socket socket(impl_->io);
    socket.connect(tcp::endpoint(asio::ip::make_address(host_), port_));
    set_timeouts(socket, timeout);
    beast::error_code ec;
    asio::write(socket, asio::buffer(bytes), ec);
    std::string out;
    char buf[4096];
    for (;;) {
        const std::size_t n = socket.read_some(asio::buffer(buf), ec);
        if (ec) break;
        out.append(buf, n);
    }
    return out;
}

HttpResponse HttpClient::get(const std::string& target, const std::string& key) {
    HttpRequest r{"GET", target, {}, {}};
    if (!key.empty()) r.headers["Authorization"] = "Bearer " + key;
    return send(r);
}

HttpResponse HttpClient::del(const std::string& target, const std::string& key) {
    HttpRequest r{"DELETE", target, {}, {}};
    if (!key.empty()) r.headers["Authorization"] = "Bearer " + key;
    return send(r);
}

HttpResponse HttpClient::post(const std::string& target, const std::string& key, const nlohmann::json& body) {
    return post_raw(target, key, body.dump());
}

HttpResponse HttpClient::post_raw(const std::string& target, const std::string& key, const std::string& body,
                                  const std::string& content_type) {
    HttpRequest r{"POST", target, {{"Content-Type", content_type}}, body};
    if (!key.empty()) r.headers["Authorization"] = "Bearer " + key;
    return send(r);
}

HttpResponse HttpClient::patch(const std::string& target, const std::string& key,
                               const nlohmann::json& body) {
    HttpRequest r{"PATCH", target, {{"Content-Type", "application/json"}}, body.dump()};
    if (!key.empty()) r.headers["Authorization"] = "Bearer " + key;
    return send(r);
}

HttpResponse HttpClient::put(const std::string& target, const std::string& key, const std::string& body) {
    HttpRequest r{"PUT", target, {{"Content-Type", "application/octet-stream"}}, body};
    if (!key.empty()) r.headers["Authorization"] = "Bearer " + key;
    return send(r);
}

void HttpClient::record(const HttpRequest& request, const HttpResponse& response) const {
    if (record_path_.empty()) return;
    std::string path = request.target.substr(0, request.target.find('?'));
    const std::string type = response.header("content-type");
    nlohmann::json body = nullptr;
    if (type.rfind("application/json", 0) == 0 || type.rfind("application/x-ndjson", 0) == 0) {
        body = nlohmann::json::parse(response.body, nullptr, false);
        if (body.is_discarded()) body = response.body;  // not JSON: the validator reports it
    }
    nlohmann::json line = {{"method", request.method},
                           {"path", path},
                           {"status", response.status},
                           {"content_type", type},
                           {"body", std::move(body)}};
    std::ofstream out(record_path_, std::ios::app);
    out << line.dump() << '\n';
}

}  // namespace forkvm::test
