#include "server/api_handlers.hpp"

#include "pool/service_error.hpp"

namespace forkvm::server {

ApiHandlers::ApiHandlers(pool::SandboxService& service, const DecodeLimits& limits,
                         const ServerMetrics& metrics, std::string openapi_yaml)
    : service_(service), limits_(limits), metrics_(metrics), openapi_yaml_(std::move(openapi_yaml)) {}

Response ApiHandlers::handle(const ApiRequest& request, ResponseStream& stream) const {
    try {
        return dispatch(request, stream);
    } catch (...) {
        auto response = error_response(std::current_exception(), request.request_id);
        // A stream already sent its 200: the client learns of the failure
        // from the truncated body (no final chunk).
        if (stream.started()) response.abort_stream = true;
        return response;
    }
}

Response ApiHandlers::dispatch(const ApiRequest& request, ResponseStream& stream) const {
    switch (request.route.id) {
        case RouteId::healthz: return json_response(200, Json{{"status", "ok"}});
        case RouteId::readyz: {
            if (!service_.ready()) {
                throw pool::ServiceError(pool::ErrorCode::unavailable, "no warm VM yet", std::nullopt, 1);
            }
            Json body;
            body["status"] = "ready";
            body["warm"] = service_.stats().pool.warm;
            return json_response(200, body);
        }
        case RouteId::metrics: {
            Response response;
            response.content_type = "text/plain; version=0.0.4; charset=utf-8";
            response.body = metrics_.render(service_.stats());
            return response;
        }
        case RouteId::openapi: {
            Response response;
            response.content_type = "application/yaml";
            response.body = openapi_yaml_;
            return response;
        }
        case RouteId::pools:
            reject_unknown_params(request.query, {});
            return json_response(200, pools_json(service_.pools(request.owner)));
        case RouteId::snapshot_sandbox:
        case RouteId::list_snapshots:
        case RouteId::get_snapshot:
        case RouteId::delete_snapshot:
        case RouteId::export_snapshot:
        case RouteId::import_snapshot:
        case RouteId::create_template:
        case RouteId::list_templates:
        case RouteId::get_template:
        case RouteId::update_template:
        case RouteId::delete_template: return catalog_route(request, stream);
        case RouteId::exec: return exec(request, stream);
        case RouteId::put_file:
        case RouteId::get_file:
        case RouteId::delete_file:
        case RouteId::stat_file:
        case RouteId::list_files:
        case RouteId::mkdir:
        case RouteId::move: return file_route(request, stream);
        default: return sandbox_route(request);
    }
}

Response ApiHandlers::catalog_route(const ApiRequest& request, ResponseStream& stream) const {
    const auto& owner = request.owner;
    const auto& id = request.route.sandbox_id;  // a sandbox, snapshot or template
    reject_unknown_params(request.query, {});
    switch (request.route.id) {
        case RouteId::export_snapshot: return export_snapshot(request, stream);
        case RouteId::import_snapshot: return import_snapshot(request);
        case RouteId::snapshot_sandbox: {
            const auto snapshot = service_.snapshot(owner, id, decode_snapshot(request.body));
            auto response = json_response(201, snapshot_json(snapshot));
            response.headers.emplace_back("Location", "/v1/snapshots/" + snapshot.id);
            return response;
        }
        case RouteId::list_snapshots: {
            Json body;
            body["snapshots"] = Json::array();
            for (const auto& snapshot : service_.list_snapshots(owner))
                body["snapshots"].push_back(snapshot_json(snapshot));
            return json_response(200, body);
        }
        case RouteId::get_snapshot:
            return json_response(200, snapshot_json(service_.get_snapshot(owner, id)));
        case RouteId::delete_snapshot: service_.remove_snapshot(owner, id); return empty_response(204);
        case RouteId::create_template: {
            const auto created = service_.create_template(owner, decode_create_template(request.body));
            auto response = json_response(201, template_json(created));
            response.headers.emplace_back("Location", "/v1/templates/" + created.name);
            return response;
        }
        case RouteId::list_templates: {
            Json body;
            body["templates"] = Json::array();
            for (const auto& info : service_.list_templates(owner))
                body["templates"].push_back(template_json(info));
            return json_response(200, body);
        }
        case RouteId::get_template:
            return json_response(200, template_json(service_.get_template(owner, id)));
        case RouteId::update_template:
            return json_response(200, template_json(service_.update_template(
                                          owner, id, decode_update_template(request.body))));
        case RouteId::delete_template: service_.remove_template(owner, id); return empty_response(204);
        default: throw pool::ServiceError::internal("route without a handler");
    }
}

Response ApiHandlers::sandbox_route(const ApiRequest& request) const {
    const auto& owner = request.owner;
    const auto& id = request.route.sandbox_id;
    switch (request.route.id) {
        case RouteId::create_sandbox: {
            reject_unknown_params(request.query, {});
            const auto sandbox = service_.create(owner, decode_create(request.body));
            auto response = json_response(201, sandbox_json(sandbox));
            response.headers.emplace_back("Location", "/v1/sandboxes/" + sandbox.info.id);
            return response;
        }
        case RouteId::list_sandboxes: {
            const auto page = service_.list(owner, decode_list_query(request.query));
            Json body;
            body["sandboxes"] = Json::array();
            for (const auto& sandbox : page.sandboxes) body["sandboxes"].push_back(sandbox_json(sandbox));
            body["next_page_token"] =
                page.next_page_token.empty() ? Json(nullptr) : Json(page.next_page_token);
            return json_response(200, body);
        }
        case RouteId::get_sandbox:
            reject_unknown_params(request.query, {});
            return json_response(200, sandbox_json(service_.get(owner, id)));
        case RouteId::delete_sandbox:
            reject_unknown_params(request.query, {});
            service_.remove(owner, id);
            return empty_response(204);
        case RouteId::keepalive:
            reject_unknown_params(request.query, {});
            return json_response(
                200, sandbox_json(service_.keep_alive(owner, id, decode_keepalive(request.body))));
        case RouteId::fork: {
            reject_unknown_params(request.query, {});
            const auto clones = service_.fork(owner, id, decode_fork(request.body, limits_));
            Json body;
            body["sandboxes"] = Json::array();
            for (const auto& sandbox : clones) body["sandboxes"].push_back(sandbox_json(sandbox));
            return json_response(201, body);
        }
        case RouteId::console: {
            reject_unknown_params(request.query, {});
            Json body;
            body["console"] = service_.console_tail(owner, id);  // dump() replaces invalid UTF-8
            return json_response(200, body);
        }
        default: throw pool::ServiceError::internal("route without a handler");
    }
}

}  // namespace forkvm::server
