#pragma once
// A small blocking HTTP/1.1 client for the server tests (Boost.Beast), and
// a recorder of exchanges for the OpenAPI validator
// (openapi/validate-responses.mjs reads them as JSON lines).

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace forkvm::test {

struct HttpResponse {
    int status = 0;
    std::map<std::string, std::string> headers;  // lower-case names
    std::string body;

    [[nodiscard]] nlohmann::json json() const;  // throws if the body is not JSON
    [[nodiscard]] std::string header(const std::string& name) const;
    // The error code of an error body, "" if there is none.
    [[nodiscard]] std::string error_code() const;
    [[nodiscard]] std::string error_field() const;
};

struct HttpRequest {
    std::string method = "GET";
    std::string target = "/";
    std::map<std::string, std::string> headers;
    std::string body;
};

class HttpClient {
public:
    HttpClient(std::string host, std::uint16_t port);
    ~HttpClient();
    HttpClient(const HttpClient&) = delete;
    HttpClient& operator=(const HttpClient&) = delete;

    // One request on a kept-alive connection (reconnects when the server
    // closed it). Throws std::runtime_error on transport errors.
    HttpResponse send(const HttpRequest& request, std::chrono::seconds timeout = std::chrono::seconds(180));

    // Shortcuts with a bearer key ("" = no Authorization header).
    HttpResponse get(const std::string& target, const std::string& key);
    HttpResponse del(const std::string& target, const std::string& key);
    HttpResponse post(const std::string& target, const std::string& key, const nlohmann::json& body);
    HttpResponse post_raw(const std::string& target, const std::string& key, const std::string& body,
                          const std::string& content_type = "application/json");
    HttpResponse patch(const std::string& target, const std::string& key, const nlohmann::json& body);
    HttpResponse put(const std::string& target, const std::string& key, const std::string& body);

    // Sends raw bytes on a fresh connection and returns what the server sent
    // back until it closed the connection or `timeout` passed.
    std::string raw_exchange(const std::string& bytes, std::chrono::seconds timeout);

    // Every exchange is appended here (method, path, status, content type,
    // parsed body) when set.
    void record_to(std::string path) { record_path_ = std::move(path); }

    // A streaming request: calls on_chunk with each piece of the body as it
    // arrives; returns the status and headers (body left empty). Stops
    // reading (and closes the connection) when on_chunk returns false.
    HttpResponse stream(const HttpRequest& request, const std::function<bool(const std::string&)>& on_chunk,
                        std::chrono::seconds timeout = std::chrono::seconds(180));

private:
    struct Impl;
    void record(const HttpRequest& request, const HttpResponse& response) const;

    std::string host_;
    std::uint16_t port_;
    std::unique_ptr<Impl> impl_;
    std::string record_path_;
};

}  // namespace forkvm::test
