#pragma once
// The endpoints of docs/api.md over a pool::SandboxService. Runs on worker
// threads (every service call blocks); never sees sockets: output goes into
// the returned Response or, for streams, through a ResponseStream.

#include <stop_token>
#include <string>

#include "pool/sandbox_service.hpp"
#include "server/metrics.hpp"
#include "server/query.hpp"
#include "server/request_decode.hpp"
#include "server/response.hpp"
#include "server/router.hpp"

namespace forkvm::server {

struct ApiRequest {
    RouteMatch route;
    Query query;
    std::string body;
    std::string body_file;  // the spooled body (snapshot import) instead of `body`
    std::string owner;      // owner id of the API key ("" on public routes)
    std::string request_id;
    bool accepts_ndjson = false;  // Accept: application/x-ndjson
    std::stop_token stop;         // requested when the client goes away or the server stops hard
};

class ApiHandlers {
public:
    ApiHandlers(pool::SandboxService& service, const DecodeLimits& limits, const ServerMetrics& metrics,
                std::string openapi_yaml);

    // Never throws: errors become error responses (or an error event on a
    // started stream).
    Response handle(const ApiRequest& request, ResponseStream& stream) const;

private:
    Response dispatch(const ApiRequest& request, ResponseStream& stream) const;
    Response sandbox_route(const ApiRequest& request) const;
    Response catalog_route(const ApiRequest& request, ResponseStream& stream) const;
    Response export_snapshot(const ApiRequest& request, ResponseStream& stream) const;
    Response import_snapshot(const ApiRequest& request) const;
    Response exec(const ApiRequest& request, ResponseStream& stream) const;
    Response exec_stream(const ApiRequest& request, const pool::ExecCall& call, ResponseStream& stream) const;
    Response file_route(const ApiRequest& request, ResponseStream& stream) const;
    Response download(const ApiRequest& request, ResponseStream& stream) const;
    Response upload(const ApiRequest& request) const;

    pool::SandboxService& service_;
    DecodeLimits limits_;
    const ServerMetrics& metrics_;
    std::string openapi_yaml_;
};

}  // namespace forkvm::server
