#include "server/access_log.hpp"

#include <algorithm>
#include <array>
#include <spdlog/spdlog.h>

namespace forkvm::server {

namespace {

constexpr std::size_t max_logged_target = 512;

bool secret_name(std::string_view name) {
    std::string lower(name);
    std::transform(lower.begin(), lower.end(), lower.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    constexpr std::array<std::string_view, 6> words = {"token",    "key",  "secret",
                                                       "password", "auth", "signature"};
    return std::any_of(words.begin(), words.end(),
                       [&](std::string_view w) { return lower.find(w) != std::string::npos; });
}

// Control characters from a client would forge log lines.
std::string printable(std::string_view text) {
    std::string out;
    out.reserve(text.size());
    for (const char c : text) {
        const auto u = static_cast<unsigned char>(c);
        out.push_back(u < 0x20 || u == 0x7F ? '?' : c);
    }
    return out;
}

}  // namespace

std::string redact_target(std::string_view target) {
    const auto q = target.find('?');
    std::string out(target.substr(0, q));
    if (q != std::string_view::npos) {
        std::string_view query = target.substr(q + 1);
        out.push_back('?');
        bool first = true;
        while (true) {
            const auto amp = query.find('&');
            const std::string_view pair = query.substr(0, amp);
            const auto eq = pair.find('=');
            if (!first) out.push_back('&');
            first = false;
            if (eq != std::string_view::npos && secret_name(pair.substr(0, eq))) {
                out.append(pair.substr(0, eq + 1));
                out.append("***");
            } else {
                out.append(pair);
            }
            if (amp == std::string_view::npos) break;
            query.remove_prefix(amp + 1);
        }
    }
    if (out.size() > max_logged_target) {
        out.resize(max_logged_target);
        out.append("...");
    }
    return printable(out);
}

void log_access(const AccessLogEntry& entry) {
    const double ms = static_cast<double>(entry.duration.count()) / 1000.0;
    const auto level = entry.status >= 500 ? spdlog::level::warn : spdlog::level::info;
    if (entry.status >= 500 && !entry.error_message.empty()) {
        spdlog::log(level, "[{}] {} {} failed: {}: {}", entry.request_id, entry.method, entry.target,
                    entry.error_code, printable(entry.error_message));
    }
    spdlog::log(level, "[{}] access method={} target={} status={} bytes={} duration_ms={:.3f} owner={}{}{}",
                entry.request_id, entry.method.empty() ? "-" : printable(entry.method), entry.target,
                entry.status, entry.bytes, ms, entry.owner.empty() ? "-" : entry.owner,
                entry.error_code.empty() ? "" : " error=", entry.error_code);
}

}  // namespace forkvm::server
