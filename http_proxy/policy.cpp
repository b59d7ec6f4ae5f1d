#include "http_proxy/policy.hpp"

#include <algorithm>
#include <limits>

#include "http_proxy/address_class.hpp"
#include "http_proxy/path.hpp"
#include "http_proxy/request.hpp"

namespace forkvm::http_proxy {

namespace {

using json = nlohmann::json;

std::string index_path(const std::string& base, std::size_t i) {
    return base + "[" + std::to_string(i) + "]";
}
std::string field_path(const std::string& base, std::string_view key) {
    return base.empty() ? std::string(key) : base + "." + std::string(key);
}

void require_keys(const json& object, const std::string& path,
                  std::initializer_list<std::string_view> known) {
    if (!object.is_object()) throw PolicyError(path, "must be an object");
    for (const auto& [key, value] : object.items()) {
        (void)value;
        if (std::find(known.begin(), known.end(), key) == known.end())
            throw PolicyError(field_path(path, key), "unknown key");
    }
}

const json& require_array(const json& value, const std::string& path, std::size_t max_size) {
    if (!value.is_array()) throw PolicyError(path, "must be an array");
    if (value.size() > max_size) throw PolicyError(path, "at most " + std::to_string(max_size) + " entries");
    return value;
}

const json& require_non_empty_array(const json& value, const std::string& path, std::size_t max_size) {
    require_array(value, path, max_size);
    if (value.empty()) throw PolicyError(path, "must not be empty (omit the key for no restriction)");
    return value;
}

std::uint64_t require_integer(const json& value, const std::string& path, std::uint64_t min,
                              std::uint64_t max) {
    const std::string message = "must be an integer in " + std::to_string(min) + ".." + std::to_string(max);
    if (value.is_number_unsigned()) {
        const auto v = value.get<std::uint64_t>();
        if (v < min || v > max) throw PolicyError(path, message);
        return v;
    }
    if (value.is_number_integer()) {
        const auto v = value.get<std::int64_t>();
        if (v < 0 || static_cast<std::uint64_t>(v) < min || static_cast<std::uint64_t>(v) > max)
            throw PolicyError(path, message);
        return static_cast<std::uint64_t>(v);
    }
    throw PolicyError(path, message);
}

const std::string& require_string(const json& value, const std::string& path) {
    if (!value.is_string()) throw PolicyError(path, "must be a string");
    return value.get_ref<const std::string&>();
}

IpPrefix parse_prefix(const json& value, const std::string& path) {
    const auto& text = require_string(value, path);
    std::string error;
    auto prefix = IpPrefix::parse(text, &error);
    if (!prefix) throw PolicyError(path, error);
    if (prefix->address().is_v6() && prefix->address().unmapped().is_v4() && prefix->length() >= 96)
        throw PolicyError(path, "write IPv4-mapped addresses as plain IPv4");
    return *prefix;
}

// `deny`: a deny rule, whose omitted ports mean every port (a name that is
// denied stays denied whatever port an allow rule opens).
Rule parse_rule(const json& value, const std::string& path, bool deny) {
    require_keys(value, path, {"domain", "ip", "ports", "methods", "paths"});
    Rule rule;
    const bool has_domain = value.contains("domain");
    const bool has_ip = value.contains("ip");
    if (has_domain == has_ip) throw PolicyError(path, "needs exactly one of \"domain\" or \"ip\"");

    if (has_domain) {
        const std::string domain_path = field_path(path, "domain");
        std::string_view text = require_string(value["domain"], domain_path);
        if (text.size() > kMaxDomainLength + 2) throw PolicyError(domain_path, "too long");
        rule.kind = Rule::Kind::exact_domain;
        if (text.substr(0, 2) == "*.") {
            rule.kind = Rule::Kind::domain_suffix;
            text.remove_prefix(2);
        }
        if (!text.empty() && text.back() == '.') throw PolicyError(domain_path, "must not end with '.'");
        auto host = parse_host(text);
        if (!host) throw PolicyError(domain_path, host.error);
        if (host.host->is_ip()) throw PolicyError(domain_path, "is an IP address; use \"ip\" for addresses");
        rule.domain = host.host->name;
    } else {
        rule.kind = Rule::Kind::ip;
        rule.ip = parse_prefix(value["ip"], field_path(path, "ip"));
    }

    if (value.contains("ports")) {
        const std::string ports_path = field_path(path, "ports");
        const auto& ports = require_non_empty_array(value["ports"], ports_path, kMaxPortsPerRule);
        for (std::size_t i = 0; i < ports.size(); ++i) {
            const auto port =
                static_cast<std::uint16_t>(require_integer(ports[i], index_path(ports_path, i), 1, 65535));
            if (std::find(rule.ports.begin(), rule.ports.end(), port) != rule.ports.end())
                throw PolicyError(index_path(ports_path, i), "duplicate port");
            rule.ports.push_back(port);
        }
    } else if (!deny) {
        rule.ports = {80, 443};
    }

    if (value.contains("methods")) {
        const std::string methods_path = field_path(path, "methods");
        const auto& methods = require_non_empty_array(value["methods"], methods_path, kMaxMethodsPerRule);
        for (std::size_t i = 0; i < methods.size(); ++i) {
            const auto& method = require_string(methods[i], index_path(methods_path, i));
            if (!is_forwardable_method(method))
                throw PolicyError(index_path(methods_path, i),
                                  "must be one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS");
            if (std::find(rule.methods.begin(), rule.methods.end(), method) != rule.methods.end())
                throw PolicyError(index_path(methods_path, i), "duplicate method");
            rule.methods.push_back(method);
        }
    }

    if (value.contains("paths")) {
        const std::string paths_path = field_path(path, "paths");
        const auto& paths = require_non_empty_array(value["paths"], paths_path, kMaxPathsPerRule);
        for (std::size_t i = 0; i < paths.size(); ++i) {
            const std::string item_path = index_path(paths_path, i);
            const auto& prefix = require_string(paths[i], item_path);
            if (prefix.size() > kMaxRulePathLength)
                throw PolicyError(item_path, "longer than " + std::to_string(kMaxRulePathLength) + " bytes");
            if (prefix.find('?') != std::string::npos)
                throw PolicyError(item_path, "must not contain '?' (paths are matched without the query)");
            auto normalized = normalize_path(prefix);
            if (!normalized) throw PolicyError(item_path, normalized.error);
            if (*normalized.path != prefix)
                throw PolicyError(item_path,
                                  "must be normalized (did you mean \"" + *normalized.path + "\"?)");
            if (std::find(rule.paths.begin(), rule.paths.end(), prefix) != rule.paths.end())
                throw PolicyError(item_path, "duplicate path");
            rule.paths.push_back(prefix);
        }
    }
    return rule;
}

std::vector<Rule> parse_rules(const json& document, std::string_view key) {
    std::vector<Rule> rules;
    if (!document.contains(key)) return rules;
    const std::string path(key);
    const auto& list = require_array(document[std::string(key)], path, kMaxRules);
    rules.reserve(list.size());
    for (std::size_t i = 0; i < list.size(); ++i)
        rules.push_back(parse_rule(list[i], index_path(path, i), key == "deny"));
    return rules;
}

Limits parse_limits(const json& value) {
    const std::string path = "limits";
    require_keys(value, path, {"max_connections", "max_bytes", "idle_timeout_ms", "total_timeout_ms"});
    Limits limits;
    if (value.contains("max_connections"))
        limits.max_connections = static_cast<std::uint32_t>(
            require_integer(value["max_connections"], path + ".max_connections", 1, 1024));
    if (value.contains("max_bytes"))
        limits.max_bytes = require_integer(value["max_bytes"], path + ".max_bytes", 1, 1ull << 40);
    if (value.contains("idle_timeout_ms"))
        limits.idle_timeout_ms = static_cast<std::uint32_t>(
            require_integer(value["idle_timeout_ms"], path + ".idle_timeout_ms", 100, 3'600'000));
    if (value.contains("total_timeout_ms"))
        limits.total_timeout_ms = static_cast<std::uint32_t>(
            require_integer(value["total_timeout_ms"], path + ".total_timeout_ms", 100, 86'400'000));
    if (limits.idle_timeout_ms > limits.total_timeout_ms)
        throw PolicyError(path + ".idle_timeout_ms", "must not exceed total_timeout_ms");
    return limits;
}

json rule_to_json(const Rule& rule) {
    json out = json::object();
    if (rule.kind == Rule::Kind::ip)
        out["ip"] = rule.ip.to_string();
    else
        out["domain"] = rule.target();
    if (!rule.ports.empty()) out["ports"] = rule.ports;
    if (!rule.methods.empty()) out["methods"] = rule.methods;
    if (!rule.paths.empty()) out["paths"] = rule.paths;
    return out;
}

bool method_matches(const Rule& rule, std::string_view method) {
    return rule.methods.empty() ||
           std::find(rule.methods.begin(), rule.methods.end(), method) != rule.methods.end();
}

bool path_matches(const Rule& rule, std::string_view path) {
    if (rule.paths.empty()) return true;
    return std::any_of(rule.paths.begin(), rule.paths.end(),
                       [&](const std::string& prefix) { return path_has_prefix(path, prefix); });
}

std::string host_port(const Host& host, std::uint16_t port) {
    return host.to_string() + ":" + std::to_string(port);
}

}  // namespace

bool Rule::matches_host(const Host& host) const {
    switch (kind) {
        case Kind::ip: return host.is_ip() && ip.contains(host.ip.unmapped());
        case Kind::exact_domain: return !host.is_ip() && host.name == domain;
        case Kind::domain_suffix:
            // Strict subdomains only: "*.pypi.org" does not match "pypi.org".
            return !host.is_ip() && host.name.size() > domain.size() + 1 &&
                   host.name.compare(host.name.size() - domain.size(), domain.size(), domain) == 0 &&
                   host.name[host.name.size() - domain.size() - 1] == '.';
    }
    return false;
}

bool Rule::matches_port(std::uint16_t port) const {
    return ports.empty() || std::find(ports.begin(), ports.end(), port) != ports.end();
}

std::string Rule::target() const {
    switch (kind) {
        case Kind::ip: return ip.to_string();
        case Kind::exact_domain: return domain;
        case Kind::domain_suffix: return "*." + domain;
    }
    return domain;
}

Policy Policy::parse(const json& document) {
    if (!document.is_object()) throw PolicyError("", "policy must be a JSON object");
    require_keys(document, "", {"allow", "deny", "allow_private", "limits"});
    Policy policy;
    policy.allow_ = parse_rules(document, "allow");
    policy.deny_ = parse_rules(document, "deny");
    if (document.contains("allow_private")) {
        const auto& list = require_array(document["allow_private"], "allow_private", kMaxAllowPrivate);
        for (std::size_t i = 0; i < list.size(); ++i)
            policy.allow_private_.push_back(parse_prefix(list[i], index_path("allow_private", i)));
    }
    if (document.contains("limits")) policy.limits_ = parse_limits(document["limits"]);

    // An allow rule naming one non-public address is useless without an
    // allow_private entry: say so now rather than deny at run time.
    for (std::size_t i = 0; i < policy.allow_.size(); ++i) {
        const auto& rule = policy.allow_[i];
        if (rule.kind != Rule::Kind::ip) continue;
        const unsigned full = rule.ip.address().is_v4() ? 32 : 128;
        if (rule.ip.length() != full) continue;
        const auto verdict = check_address(rule.ip.address(), policy);
        if (!verdict.allowed)
            throw PolicyError(index_path("allow", i) + ".ip",
                              verdict.reason + "; also list it in allow_private to permit it");
    }
    return policy;
}

json Policy::to_json() const {
    json out = json::object();
    out["allow"] = json::array();
    for (const auto& rule : allow_) out["allow"].push_back(rule_to_json(rule));
    out["deny"] = json::array();
    for (const auto& rule : deny_) out["deny"].push_back(rule_to_json(rule));
    out["allow_private"] = json::array();
    for (const auto& prefix : allow_private_) out["allow_private"].push_back(prefix.to_string());
    out["limits"] = {{"max_connections", limits_.max_connections},
                     {"max_bytes", limits_.max_bytes},
                     {"idle_timeout_ms", limits_.idle_timeout_ms},
                     {"total_timeout_ms", limits_.total_timeout_ms}};
    return out;
}

Decision Policy::decide_connect(std::string_view host, std::uint16_t port) const {
    auto parsed = parse_host(host);
    if (!parsed) return {false, "invalid host: " + parsed.error};
    return decide_connect(*parsed.host, port);
}

Decision Policy::decide_connect(const Host& host, std::uint16_t port) const {
    return decide(host, port, true, {}, {});
}

Decision Policy::decide_request(std::string_view method, std::string_view host, std::uint16_t port,
                                std::string_view target) const {
    auto parsed = parse_host(host);
    if (!parsed) return {false, "invalid host: " + parsed.error};
    return decide_request(method, *parsed.host, port, target);
}

Decision Policy::decide_request(std::string_view method, const Host& host, std::uint16_t port,
                                std::string_view target) const {
    if (!is_forwardable_method(method)) return {false, "method " + std::string(method) + " is not forwarded"};
    auto path = normalize_path(target);
    if (!path) return {false, "path refused: " + path.error};
    return decide(host, port, false, method, *path.path);
}

Decision Policy::decide(const Host& host, std::uint16_t port, bool is_connect, std::string_view method,
                        std::string_view normalized_path) const {
    const std::string where = host_port(host, port);
    for (std::size_t i = 0; i < deny_.size(); ++i) {
        const auto& rule = deny_[i];
        if (!rule.matches_host(host) || !rule.matches_port(port)) continue;
        // A tunnel might carry any method or path, so a restricted deny rule
        // still denies it.
        if (is_connect || (method_matches(rule, method) && path_matches(rule, normalized_path)))
            return {false, where + " denied by deny[" + std::to_string(i) + "] (" + rule.target() + ")"};
    }

    std::string near_miss;
    for (std::size_t i = 0; i < allow_.size(); ++i) {
        const auto& rule = allow_[i];
        if (!rule.matches_host(host) || !rule.matches_port(port)) continue;
        const std::string name = "allow[" + std::to_string(i) + "] (" + rule.target() + ")";
        if (is_connect && rule.restricts_requests()) {
            if (near_miss.empty())
                near_miss =
                    name + " restricts methods/paths, which cannot be checked inside a CONNECT tunnel";
            continue;
        }
        if (!is_connect && !method_matches(rule, method)) {
            if (near_miss.empty()) near_miss = name + " does not allow method " + std::string(method);
            continue;
        }
        if (!is_connect && !path_matches(rule, normalized_path)) {
            if (near_miss.empty()) near_miss = name + " does not allow path " + std::string(normalized_path);
            continue;
        }
        if (host.is_ip()) {
            auto address = check_address(host.ip, *this);
            if (!address.allowed) return {false, where + ": " + address.reason};
        }
        return {true, where + " allowed by " + name};
    }
    if (!near_miss.empty()) return {false, where + " denied: " + near_miss};
    return {false, where + " denied: no allow rule matches"};
}

Decision check_address(const IpAddress& address, const Policy& policy) {
    const auto klass = classify_address(address);
    if (!klass.special) return {true, address.to_string() + " is " + klass.reason};
    const auto plain = address.unmapped();
    for (std::size_t i = 0; i < policy.allow_private().size(); ++i) {
        const auto& prefix = policy.allow_private()[i];
        if (prefix.contains(address) || prefix.contains(plain))
            return {true, address.to_string() + " is in " + klass.reason + ", permitted by allow_private[" +
                              std::to_string(i) + "]"};
    }
    return {false, address.to_string() + " is in " + klass.reason + " (refused; not in allow_private)"};
}

}  // namespace forkvm::http_proxy
