#pragma once
// Maps (method, path) to one endpoint of docs/api.md. Pure and cheap: it runs
// on the io thread before a request is queued for a worker.

#include <optional>
#include <string>
#include <string_view>

namespace forkvm::server {

enum class RouteId {
    healthz,
    readyz,
    metrics,
    openapi,
    create_sandbox,
    list_sandboxes,
    get_sandbox,
    delete_sandbox,
    keepalive,
    fork,
    console,
    exec,
    put_file,
    get_file,
    delete_file,
    stat_file,
    list_files,
    mkdir,
    move,
    snapshot_sandbox,
    list_snapshots,
    get_snapshot,
    delete_snapshot,
    export_snapshot,
    import_snapshot,
    create_template,
    list_templates,
    get_template,
    update_template,
    delete_template,
    pools,
};

struct RouteMatch {
    RouteId id = RouteId::healthz;
    std::string_view route_template;  // "/v1/sandboxes/{id}", for metrics and logs
    std::string sandbox_id;           // percent-decoded {id} or {name}, "" when the route has none
};

struct RouteLookup {
    std::optional<RouteMatch> match;  // set when path and method matched
    bool path_known = false;          // the path matched some route (so a miss is 405, not 404)
    std::string allow;                // "GET, DELETE" for a 405
    std::string_view route_template;  // of the known path, also for a 405
};

RouteLookup route(std::string_view method, std::string_view path);

// Whether the route's request body is JSON (so Content-Type is checked and
// max_body_bytes applies), and whether it may need the auth check.
bool route_takes_json(RouteId id) noexcept;
bool route_is_public(RouteId id) noexcept;  // healthz, readyz, openapi (metrics has its own rule)

}  // namespace forkvm::server
