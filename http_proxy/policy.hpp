// The egress policy: which destinations a sandbox may reach through the
// proxy, and the limits on its connections. Deny by default; deny rules win
// over allow rules; non-public addresses are refused unless allow_private
// names them. The JSON format is documented in docs/egress.md.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "http_proxy/host.hpp"
#include "http_proxy/ip_address.hpp"

namespace forkvm::http_proxy {

// A policy validation error. path() names the offending field, e.g.
// "allow[2].ports[0]"; what() is "allow[2].ports[0]: must be an integer in 1..65535".
class PolicyError : public std::runtime_error {
public:
    PolicyError(std::string path, const std::string& message)
        : std::runtime_error(path.empty() ? message : path + ": " + message), path_(std::move(path)) {}
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

struct Rule {
    enum class Kind { exact_domain, domain_suffix, ip };
    Kind kind = Kind::exact_domain;
    // exact_domain: the name ("example.com"); domain_suffix: the suffix
    // without "*." ("pypi.org"), which matches strict subdomains only.
    std::string domain;
    IpPrefix ip;  // kind == ip
    // [80, 443] when an allow rule omits them; empty (every port) when a deny rule does.
    std::vector<std::uint16_t> ports;
    std::vector<std::string> methods;  // empty = any method
    std::vector<std::string> paths;    // empty = any path; normalized prefixes

    // Whether this rule restricts what is inside a request (methods/paths),
    // which a CONNECT tunnel hides.
    bool restricts_requests() const { return !methods.empty() || !paths.empty(); }
    bool matches_host(const Host& host) const;
    bool matches_port(std::uint16_t port) const;
    // "*.pypi.org", "example.com", "203.0.113.0/24": for messages and JSON.
    std::string target() const;

    friend bool operator==(const Rule&, const Rule&) = default;
};

struct Limits {
    std::uint32_t max_connections = 16;        // concurrent, per sandbox
    std::uint64_t max_bytes = 100ull << 20;    // both directions, per sandbox
    std::uint32_t idle_timeout_ms = 30'000;    // per connection
    std::uint32_t total_timeout_ms = 300'000;  // per connection

    friend bool operator==(const Limits&, const Limits&) = default;
};

struct Decision {
    bool allowed = false;
    std::string reason;
};

// Caps that keep a hostile or mistaken policy small.
inline constexpr std::size_t kMaxRules = 256;
inline constexpr std::size_t kMaxPortsPerRule = 32;
inline constexpr std::size_t kMaxMethodsPerRule = 8;
inline constexpr std::size_t kMaxPathsPerRule = 32;
inline constexpr std::size_t kMaxRulePathLength = 1024;
inline constexpr std::size_t kMaxAllowPrivate = 256;

class Policy {
public:
    // The empty policy: denies everything, default limits.
    Policy() = default;

    // Validates a policy document; throws PolicyError naming the field.
    static Policy parse(const nlohmann::json& document);
    // A document that parse() reads back to an equal Policy.
    nlohmann::json to_json() const;

    // CONNECT host:port. A rule that restricts methods or paths never
    // allows a tunnel (the host cannot see inside TLS); a deny rule denies
    // the tunnel whatever methods/paths it names (it might carry them).
    // For an IP-literal host this includes check_address(); for a name the
    // caller must call check_address() on every address it resolves to.
    Decision decide_connect(std::string_view host, std::uint16_t port) const;
    Decision decide_connect(const Host& host, std::uint16_t port) const;

    // A plain HTTP request (absolute-form, scheme http). target is the
    // path with optional query, as sent; it is normalized (see path.hpp)
    // before path rules are matched, and an unnormalizable path is denied.
    Decision decide_request(std::string_view method, std::string_view host, std::uint16_t port,
                            std::string_view target) const;
    Decision decide_request(std::string_view method, const Host& host, std::uint16_t port,
                            std::string_view target) const;

    const std::vector<Rule>& allow() const { return allow_; }
    const std::vector<Rule>& deny() const { return deny_; }
    const std::vector<IpPrefix>& allow_private() const { return allow_private_; }
    const Limits& limits() const { return limits_; }

    friend bool operator==(const Policy&, const Policy&) = default;

private:
    Decision decide(const Host& host, std::uint16_t port, bool is_connect, std::string_view method,
                    std::string_view normalized_path) const;

    std::vector<Rule> allow_;
    std::vector<Rule> deny_;
    std::vector<IpPrefix> allow_private_;
    Limits limits_;
};

// The address step, run after name resolution on the very address the
// proxy will connect to (which closes DNS rebinding): refuses non-public
// addresses (classify_address) unless an allow_private entry contains them.
Decision check_address(const IpAddress& address, const Policy& policy);

}  // namespace forkvm::http_proxy
