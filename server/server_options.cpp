#include "server/server_options.hpp"

#include <algorithm>

#include "pool/service_error.hpp"
#include "server/query.hpp"

namespace forkvm::server {

std::pair<std::string, std::uint16_t> parse_listen(std::string_view listen) {
    const auto bad = [&](const std::string& why) {
        return pool::ServiceError::invalid_argument("server.listen",
                                                    "\"" + std::string(listen) + "\": " + why);
    };
    std::string host;
    std::string_view port_text;
    if (listen.starts_with('[')) {
        const auto close = listen.find(']');
        if (close == std::string_view::npos || close + 1 >= listen.size() || listen[close + 1] != ':') {
            throw bad("expected [ADDRESS]:PORT");
        }
        host = std::string(listen.substr(1, close - 1));
        port_text = listen.substr(close + 2);
    } else {
        const auto colon = listen.rfind(':');
        if (colon == std::string_view::npos) throw bad("expected HOST:PORT");
        host = std::string(listen.substr(0, colon));
        port_text = listen.substr(colon + 1);
    }
    const auto port = parse_uint(port_text);
    if (!port || *port > 65535) throw bad("the port must be 0..65535");
    if (host.empty()) host = "0.0.0.0";
    return {host, static_cast<std::uint16_t>(*port)};
}

ServerOptions server_options_from(const config::Config& config) {
    ServerOptions options;
    const auto& s = config.server;
    std::tie(options.host, options.port) = parse_listen(s.listen);
    if (s.threads > 0) options.io_threads = static_cast<std::size_t>(s.threads);
    if (s.max_connections > 0) options.max_connections = static_cast<std::size_t>(s.max_connections);
    if (s.max_header_bytes > 0) options.max_header_bytes = static_cast<std::size_t>(s.max_header_bytes);
    if (s.max_body_bytes > 0) options.max_body_bytes = s.max_body_bytes;
    if (s.max_upload_bytes > 0) options.max_upload_bytes = s.max_upload_bytes;
    if (s.read_timeout.count() > 0) options.read_timeout = s.read_timeout;
    if (s.write_timeout.count() > 0) options.write_timeout = s.write_timeout;
    if (s.shutdown_deadline.count() > 0) options.shutdown_deadline = s.shutdown_deadline;
    options.spool_dir = config.data_dir + "/spool";
    if (s.max_import_bytes > 0) options.max_import_bytes = s.max_import_bytes;
    options.tls_cert = s.tls_cert;
    options.tls_key = s.tls_key;
    options.api_keys = config.auth.api_keys;
    options.rate_limit = static_cast<double>(config.auth.rate_limit);
    options.rate_burst = static_cast<double>(std::max(config.auth.rate_burst, 1));
    options.admin_key = config.auth.admin_key;
    if (config.sandbox.max_fork_count > 0) {
        options.max_fork_count = static_cast<std::size_t>(config.sandbox.max_fork_count);
    }
    // Enough workers for every sandbox to run a blocking call at once, plus
    // room for the quick calls (get, list, metrics) next to them.
    const auto sandboxes = static_cast<std::size_t>(std::max(config.sandbox.max_sandboxes, 0));
    options.worker_threads = std::clamp<std::size_t>(sandboxes + 8, 16, 512);
    options.worker_queue = options.worker_threads * 4;
    return options;
}

}  // namespace forkvm::server
