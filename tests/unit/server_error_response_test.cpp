#include <doctest/doctest.h>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "server/error_response.hpp"

using forkvm::pool::ErrorCode;
using forkvm::pool::ServiceError;
using forkvm::server::make_error_response;

TEST_CASE("server: every error code maps to its documented status") {
    const std::map<ErrorCode, int> expected = {
        {ErrorCode::invalid_argument, 400},
        {ErrorCode::unauthorized, 401},
        {ErrorCode::forbidden, 403},
        {ErrorCode::not_found, 404},
        {ErrorCode::expired, 404},
        {ErrorCode::conflict, 409},
        {ErrorCode::payload_too_large, 413},
        {ErrorCode::rate_limited, 429},
        {ErrorCode::capacity_exhausted, 503},
        {ErrorCode::insufficient_memory, 503},
        {ErrorCode::unavailable, 503},
        {ErrorCode::timeout, 504},
        {ErrorCode::vm_broken, 502},
        {ErrorCode::guest_error, 502},
        {ErrorCode::internal, 500},
    };
    CHECK(expected.size() == forkvm::pool::all_error_codes.size());
    for (ErrorCode code : forkvm::pool::all_error_codes) {
        CAPTURE(forkvm::pool::to_string(code));
        REQUIRE(expected.count(code) == 1);
        CHECK(forkvm::server::http_status(code) == expected.at(code));

        const auto response = make_error_response(ServiceError(code, "something happened"), "req-1");
        CHECK(response.status == expected.at(code));
        const auto body = nlohmann::json::parse(response.body);  // throws (fails the test) if not JSON
        REQUIRE(body.is_object());
        REQUIRE(body.size() == 1);
        const auto& error = body.at("error");
        CHECK(error.at("code") == std::string(forkvm::pool::to_string(code)));
        CHECK(error.at("request_id") == "req-1");
        CHECK(!error.contains("field"));
        if (code == ErrorCode::internal)
            CHECK(error.at("message") == "internal error");
        else
            CHECK(error.at("message") == "something happened");

        const bool retry = response.status == 429 || response.status == 503;
        CHECK(response.retry_after.has_value() == retry);
        if (retry) CHECK(*response.retry_after == forkvm::server::default_retry_after_seconds);
    }
}

TEST_CASE("server: error body includes field, and request_id only when present") {
    const auto response = make_error_response(ServiceError::invalid_argument("ttl_seconds", "must be > 0"));
    CHECK(response.status == 400);
    const auto body = nlohmann::json::parse(response.body);
    CHECK(
        body ==
        nlohmann::json::parse(
            R"({"error": {"code": "invalid_argument", "message": "must be > 0", "field": "ttl_seconds"}})"));
    CHECK(!response.retry_after);
}

TEST_CASE("server: retry hint from the service wins over the default") {
    const auto response = make_error_response(ServiceError::capacity_exhausted("pool empty", 9));
    CHECK(response.status == 503);
    CHECK(response.retry_after == 9U);
}

TEST_CASE("server: internal errors never leak their message") {
    const auto response = make_error_response(ServiceError::internal("secret path /var/lib/x failed"), "r");
    CHECK(response.status == 500);
    CHECK(response.body.find("secret path") == std::string::npos);
}

TEST_CASE("server: hostile messages still give valid, bounded JSON") {
    std::string message = "bad \xff\xfe bytes \"quoted\" \n";
    message += std::string(10000, 'x');
    const auto response =
        make_error_response(ServiceError(ErrorCode::not_found, message, std::string("f\xc3")));
    CHECK(response.body.size() < 2000);
    const auto body = nlohmann::json::parse(response.body);
    CHECK(body.at("error").at("code") == "not_found");
}

TEST_CASE("server: exception_ptr maps ServiceError, bad_alloc and unknown exceptions") {
    auto from = [](auto e) { return make_error_response(std::make_exception_ptr(e), "id"); };
    CHECK(from(ServiceError(ErrorCode::expired, "gone")).status == 404);
    CHECK(nlohmann::json::parse(from(ServiceError(ErrorCode::expired, "gone")).body)["error"]["code"] ==
          "expired");
    const auto oom = from(std::bad_alloc());
    CHECK(oom.status == 503);
    CHECK(oom.retry_after.has_value());
    const auto other = from(std::logic_error("boom"));
    CHECK(other.status == 500);
    CHECK(other.body.find("boom") == std::string::npos);
    CHECK(make_error_response(std::exception_ptr{}, "").status == 500);
}
