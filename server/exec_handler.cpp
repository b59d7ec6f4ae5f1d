// POST /v1/sandboxes/{id}/exec, buffered or streamed as NDJSON.
#include "pool/service_error.hpp"
#include "server/api_handlers.hpp"

namespace forkvm::server {

namespace {

constexpr std::string_view ndjson = "application/x-ndjson";

std::string line(const Json& event) { return dump(event) + "\n"; }

std::string output_event(std::string_view type, vmm::ByteView data) {
    Json event;
    event["type"] = type;
    put_output(event, "data", "encoding",
               std::string_view(reinterpret_cast<const char*>(data.data()), data.size()));
    return line(event);
}

}  // namespace

Response ApiHandlers::exec(const ApiRequest& request, ResponseStream& stream) const {
    reject_unknown_params(request.query, {"stream"});
    const bool streaming = request.query.get_bool("stream").value_or(false) || request.accepts_ndjson;
    const auto call = decode_exec(request.body, limits_);
    if (streaming) return exec_stream(request, call, stream);
    const auto result = service_.exec_buffered(request.owner, request.route.sandbox_id, call, request.stop);
    return json_response(200, exec_result_json(result));
}

Response ApiHandlers::exec_stream(const ApiRequest& request, const pool::ExecCall& call,
                                  ResponseStream& stream) const {
    // The 200 goes out when the command has started, so that failures before
    // that (unknown sandbox, bad user, capacity) still get their own status.
    const auto ensure_started = [&] {
        if (!stream.started()) stream.begin(200, ndjson);
    };
    vmm::ExecCallbacks callbacks;
    callbacks.on_started = [&](std::uint32_t pid) {
        ensure_started();
        Json event;
        event["type"] = "started";
        event["pid"] = pid;
        stream.write(line(event));
    };
    callbacks.on_stdout = [&](vmm::ByteView data) {
        ensure_started();
        stream.write(output_event("stdout", data));
    };
    callbacks.on_stderr = [&](vmm::ByteView data) {
        ensure_started();
        stream.write(output_event("stderr", data));
    };
    try {
        const auto result =
            service_.exec(request.owner, request.route.sandbox_id, call, callbacks, request.stop);
        ensure_started();
        Json event;
        event["type"] = "exit";
        put_exit_fields(event, result);
        stream.write(line(event));
        return Response{};
    } catch (...) {
        if (!stream.started()) throw;
        // The 200 is gone: report the error in-band as the last line.
        auto error = error_response(std::current_exception(), request.request_id);
        Json event;
        event["type"] = "error";
        const auto parsed = Json::parse(error.body, nullptr, false);
        event["error"] = parsed.is_object() && parsed.contains("error") ? parsed["error"] : Json::object();
        stream.write(line(event));
        Response response;
        response.error_code = error.error_code;
        response.error_message = error.error_message;
        return response;
    }
}

}  // namespace forkvm::server
