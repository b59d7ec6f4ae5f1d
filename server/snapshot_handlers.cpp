// Snapshot export (a streamed download) and import (a spooled upload).
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "pool/service_error.hpp"
#include "server/api_handlers.hpp"
#include "vmm/unique_fd.hpp"

namespace forkvm::server {

Response ApiHandlers::export_snapshot(const ApiRequest& request, ResponseStream& stream) const {
    // The 200 goes out with the first bytes, so an unknown snapshot is still a 404.
    const vmm::DataSink sink = [&](vmm::ByteView data) {
        if (!stream.started()) stream.begin(200, "application/octet-stream");
        if (!stream.write(std::string_view(reinterpret_cast<const char*>(data.data()), data.size())) ||
            request.stop.stop_requested()) {
            throw pool::ServiceError(pool::ErrorCode::unavailable, "the client went away during the export");
        }
    };
    service_.export_snapshot(request.owner, request.route.sandbox_id, sink);
    return Response{};
}

Response ApiHandlers::import_snapshot(const ApiRequest& request) const {
    if (request.body_file.empty())
        throw pool::ServiceError::invalid_argument("body", "the export stream is missing");
    UniqueFd fd(::open(request.body_file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd)
        throw pool::ServiceError::internal("cannot open the spooled upload: " +
                                           std::string(std::strerror(errno)));
    const vmm::DataSource source = [&](std::span<std::uint8_t> buffer) -> std::size_t {
        for (;;) {
            if (request.stop.stop_requested()) {
                throw pool::ServiceError(pool::ErrorCode::unavailable, "the import was cancelled");
            }
            const auto n = ::read(fd.get(), buffer.data(), buffer.size());
            if (n >= 0) return static_cast<std::size_t>(n);
            if (errno != EINTR) throw pool::ServiceError::internal("reading the spooled upload failed");
        }
    };
    const auto snapshot = service_.import_snapshot(request.owner, source);
    auto response = json_response(201, snapshot_json(snapshot));
    response.headers.emplace_back("Location", "/v1/snapshots/" + snapshot.id);
    return response;
}

}  // namespace forkvm::server
