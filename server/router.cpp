#include "server/router.hpp"

#include <array>
#include <vector>

#include "server/query.hpp"

namespace forkvm::server {

namespace {

struct RouteDef {
    std::string_view method;
    std::string_view pattern;  // segments; "{id}" is the sandbox id
    RouteId id;
};

constexpr std::array<RouteDef, 31> routes = {{
    {"GET", "/healthz", RouteId::healthz},
    {"GET", "/readyz", RouteId::readyz},
    {"GET", "/metrics", RouteId::metrics},
    {"GET", "/openapi.yaml", RouteId::openapi},
    {"POST", "/v1/sandboxes", RouteId::create_sandbox},
    {"GET", "/v1/sandboxes", RouteId::list_sandboxes},
    {"GET", "/v1/sandboxes/{id}", RouteId::get_sandbox},
    {"DELETE", "/v1/sandboxes/{id}", RouteId::delete_sandbox},
    {"POST", "/v1/sandboxes/{id}/keepalive", RouteId::keepalive},
    {"POST", "/v1/sandboxes/{id}/fork", RouteId::fork},
    {"GET", "/v1/sandboxes/{id}/console", RouteId::console},
    {"POST", "/v1/sandboxes/{id}/exec", RouteId::exec},
    {"PUT", "/v1/sandboxes/{id}/files", RouteId::put_file},
    {"GET", "/v1/sandboxes/{id}/files", RouteId::get_file},
    {"DELETE", "/v1/sandboxes/{id}/files", RouteId::delete_file},
    {"GET", "/v1/sandboxes/{id}/files/stat", RouteId::stat_file},
    {"GET", "/v1/sandboxes/{id}/files/list", RouteId::list_files},
    {"POST", "/v1/sandboxes/{id}/files/mkdir", RouteId::mkdir},
    {"POST", "/v1/sandboxes/{id}/files/move", RouteId::move},
    {"POST", "/v1/sandboxes/{id}/snapshot", RouteId::snapshot_sandbox},
    {"GET", "/v1/snapshots", RouteId::list_snapshots},
    {"GET", "/v1/snapshots/{id}", RouteId::get_snapshot},
    {"DELETE", "/v1/snapshots/{id}", RouteId::delete_snapshot},
    {"GET", "/v1/snapshots/{id}/export", RouteId::export_snapshot},
    {"POST", "/v1/snapshots/import", RouteId::import_snapshot},
    {"POST", "/v1/templates", RouteId::create_template},
    {"GET", "/v1/templates", RouteId::list_templates},
    {"GET", "/v1/templates/{name}", RouteId::get_template},
    {"PATCH", "/v1/templates/{name}", RouteId::update_template},
    {"DELETE", "/v1/templates/{name}", RouteId::delete_template},
    {"GET", "/v1/pools", RouteId::pools},
}};

std::vector<std::string_view> segments(std::string_view path) {
    std::vector<std::string_view> out;
    if (path.empty() || path.front() != '/') return out;
    path.remove_prefix(1);
    while (true) {
        const auto slash = path.find('/');
        out.push_back(path.substr(0, slash));
        if (slash == std::string_view::npos) break;
        path.remove_prefix(slash + 1);
    }
    return out;
}

// Matches a path against a pattern; on success *id gets the decoded {id} or {name}.
bool matches(std::string_view pattern, const std::vector<std::string_view>& path_segments, std::string* id) {
    const auto pattern_segments = segments(pattern);
    if (pattern_segments.size() != path_segments.size()) return false;
    std::string found;
    for (std::size_t i = 0; i < pattern_segments.size(); ++i) {
        if (pattern_segments[i] == "{id}" || pattern_segments[i] == "{name}") {
            auto decoded = percent_decode(path_segments[i], false);
            if (!decoded || decoded->empty()) return false;
            found = std::move(*decoded);
        } else if (pattern_segments[i] != path_segments[i]) {
            return false;
        }
    }
    *id = std::move(found);
    return true;
}

}  // namespace

RouteLookup route(std::string_view method, std::string_view path) {
    RouteLookup lookup;
    const auto path_segments = segments(path);
    if (path_segments.empty()) return lookup;
    for (const auto& def : routes) {
        std::string id;
        if (!matches(def.pattern, path_segments, &id)) continue;
        if (!lookup.path_known) lookup.route_template = def.pattern;
        lookup.path_known = true;
        if (!lookup.allow.empty()) lookup.allow += ", ";
        lookup.allow += def.method;
        if (def.method == method && !lookup.match) {
            lookup.match = RouteMatch{def.id, def.pattern, std::move(id)};
        }
    }
    if (lookup.match) lookup.allow.clear();
    return lookup;
}

bool route_takes_json(RouteId id) noexcept {
    switch (id) {
        case RouteId::create_sandbox:
        case RouteId::keepalive:
        case RouteId::fork:
        case RouteId::exec:
        case RouteId::mkdir:
        case RouteId::move:
        case RouteId::snapshot_sandbox:
        case RouteId::create_template:
        case RouteId::update_template: return true;
        default: return false;
    }
}

bool route_is_public(RouteId id) noexcept {
    return id == RouteId::healthz || id == RouteId::readyz || id == RouteId::openapi;
}

}  // namespace forkvm::server
