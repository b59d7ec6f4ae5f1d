// The /v1/sandboxes/{id}/files* routes.
#include <algorithm>
#include <cstring>

#include "pool/service_error.hpp"
#include "server/api_handlers.hpp"

namespace forkvm::server {

Response ApiHandlers::file_route(const ApiRequest& request, ResponseStream& stream) const {
    const auto& owner = request.owner;
    const auto& id = request.route.sandbox_id;
    switch (request.route.id) {
        case RouteId::put_file: return upload(request);
        case RouteId::get_file: return download(request, stream);
        case RouteId::delete_file: {
            reject_unknown_params(request.query, {"path", "recursive"});
            const auto path = decode_path_param(request.query);
            service_.remove_path(owner, id, path, request.query.get_bool("recursive").value_or(false));
            return empty_response(204);
        }
        case RouteId::stat_file: {
            reject_unknown_params(request.query, {"path"});
            const auto path = decode_path_param(request.query);
            return json_response(200, stat_json(path, service_.stat(owner, id, path)));
        }
        case RouteId::list_files: {
            reject_unknown_params(request.query, {"path"});
            const auto path = decode_path_param(request.query);
            return json_response(200, dir_json(path, service_.list_dir(owner, id, path)));
        }
        case RouteId::mkdir: {
            reject_unknown_params(request.query, {});
            const auto mkdir = decode_mkdir(request.body);
            service_.mkdir(owner, id, mkdir.path, mkdir.parents, mkdir.mode);
            return json_response(201, Json{{"path", mkdir.path}});
        }
        case RouteId::move: {
            reject_unknown_params(request.query, {});
            const auto move = decode_move(request.body);
            service_.move(owner, id, move.from, move.to);
            Json body;
            body["from"] = move.from;
            body["to"] = move.to;
            return json_response(200, body);
        }
        default: throw pool::ServiceError::internal("route without a handler");
    }
}

Response ApiHandlers::upload(const ApiRequest& request) const {
    const auto write = decode_write_query(request.query);
    // The body was read by the connection within max_upload_bytes; hand it
    // over in chunks as the agent's credit allows.
    std::size_t offset = 0;
    const std::string& data = request.body;
    const vmm::DataSource source = [&](std::span<std::uint8_t> buffer) -> std::size_t {
        const std::size_t n = std::min(buffer.size(), data.size() - offset);
        if (n > 0) std::memcpy(buffer.data(), data.data() + offset, n);
        offset += n;
        return n;
    };
    service_.write_file(request.owner, request.route.sandbox_id, write, data.size(), source, request.stop);
    Json body;
    body["path"] = write.path;
    body["size"] = data.size();
    return json_response(201, body);
}

Response ApiHandlers::download(const ApiRequest& request, ResponseStream& stream) const {
    const auto read = decode_read_query(request.query);
    // The 200 goes out with the first bytes, so a missing file is still a 404.
    const vmm::DataSink sink = [&](vmm::ByteView data) {
        if (!stream.started()) stream.begin(200, "application/octet-stream");
        stream.write(std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
    };
    service_.read_file(request.owner, request.route.sandbox_id, read, sink, request.stop);
    if (!stream.started()) stream.begin(200, "application/octet-stream");  // an empty file
    return Response{};
}

}  // namespace forkvm::server
