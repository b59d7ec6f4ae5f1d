#pragma once
// Everything HttpServer needs, decoupled from the config file format so that
// tests can build one directly. server_options_from() maps config::Config.

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.hpp"

namespace forkvm::server {

struct ServerOptions {
    std::string host = "127.0.0.1";
    std::uint16_t port = 8080;  // 0 = any free port (see HttpServer::port())
    std::size_t io_threads = 1;
    // Open connections; one more is answered 503 and closed at once.
    std::size_t max_connections = 1024;
    std::size_t max_header_bytes = 16 * 1024;
    std::uint64_t max_body_bytes = 1024 * 1024;
    std::uint64_t max_upload_bytes = 64 * 1024 * 1024;
    std::chrono::milliseconds read_timeout{30'000};   // for a whole request (headers and body)
    std::chrono::milliseconds write_timeout{30'000};  // per response write or stream chunk
    std::chrono::milliseconds shutdown_deadline{10'000};
    // Blocking service calls run here, never on the io threads. A request
    // that finds every worker busy and the queue full is answered 503.
    std::size_t worker_threads = 32;
    std::size_t worker_queue = 256;
    std::vector<std::string> api_keys;
    std::string admin_key;
    // Requests per second per API key (token bucket; 0 = no limit) and the burst it may save up.
    double rate_limit = 0;
    double rate_burst = 1;
    std::size_t max_fork_count = 16;
    std::uint64_t max_exec_output_bytes = 16U * 1024U * 1024U;
    // PEM files; both set = HTTPS only (see tls_context.hpp), both empty = plain HTTP.
    std::string tls_cert;
    std::string tls_key;
    // Snapshot imports: their bodies are spooled to files in spool_dir
    // (created at start, emptied of leftovers), up to max_import_bytes each,
    // with import_read_timeout to arrive.
    std::string spool_dir = "/var/lib/forkvm/spool";
    std::uint64_t max_import_bytes = 64ULL << 30;
    std::chrono::milliseconds import_read_timeout{std::chrono::hours(1)};
    // Chunk size used to stream uploads to the service.
    std::size_t upload_chunk_bytes = 64 * 1024;
};

// "HOST:PORT", "[v6]:PORT" or ":PORT" (all interfaces). Throws
// ServiceError(invalid_argument, field "server.listen").
std::pair<std::string, std::uint16_t> parse_listen(std::string_view listen);

// Throws ServiceError(invalid_argument) for a bad listen address.
ServerOptions server_options_from(const config::Config& config);

}  // namespace forkvm::server
