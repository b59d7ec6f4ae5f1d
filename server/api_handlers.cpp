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
        case RouteId::pools: return json_response(200, pools_json(service_.stats()));
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
