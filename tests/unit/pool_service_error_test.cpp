#include <doctest/doctest.h>
#include <set>
#include <string>

#include "pool/service_error.hpp"

using forkvm::pool::ErrorCode;
using forkvm::pool::ServiceError;

TEST_CASE("pool: every error code has a unique stable string that parses back") {
    std::set<std::string> seen;
    for (ErrorCode code : forkvm::pool::all_error_codes) {
        const std::string name(forkvm::pool::to_string(code));
        CHECK(seen.insert(name).second);
        CHECK(forkvm::pool::error_code_from_string(name) == code);
        for (char c : name) CHECK(((c >= 'a' && c <= 'z') || c == '_'));
    }
    CHECK(seen.size() == forkvm::pool::all_error_codes.size());
    CHECK(forkvm::pool::to_string(ErrorCode::not_found) == "not_found");
    CHECK(forkvm::pool::to_string(ErrorCode::capacity_exhausted) == "capacity_exhausted");
    CHECK(!forkvm::pool::error_code_from_string("NotFound"));
    CHECK(!forkvm::pool::error_code_from_string(""));
}

TEST_CASE("pool: ServiceError carries code, message, field and retry hint") {
    const ServiceError e(ErrorCode::rate_limited, "slow down", std::nullopt, 7);
    CHECK(e.code() == ErrorCode::rate_limited);
    CHECK(e.message() == "slow down");
    CHECK(!e.field());
    CHECK(e.retry_after_seconds() == 7U);
    CHECK(std::string(e.what()) == "rate_limited: slow down");

    const auto bad = ServiceError::invalid_argument("ttl", "must be positive");
    CHECK(bad.code() == ErrorCode::invalid_argument);
    CHECK(bad.field() == std::string("ttl"));
    CHECK(ServiceError::capacity_exhausted("full", 3).retry_after_seconds() == 3U);
    CHECK(ServiceError::not_found("x").code() == ErrorCode::not_found);
    CHECK(ServiceError::internal("x").code() == ErrorCode::internal);

    bool caught = false;
    try {
        throw ServiceError::not_found("no sandbox");
    } catch (const std::runtime_error& err) {
        caught = std::string(err.what()) == "not_found: no sandbox";
    }
    CHECK(caught);
}
