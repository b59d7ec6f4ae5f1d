#pragma once
// What a call throws as a pool::ServiceError (the one error type the API
// maps to HTTP): its code, or the request field it names.

#include <doctest/doctest.h>
#include <string>

#include "pool/service_error.hpp"

namespace forkvm::test {

// The code of the ServiceError `fn` throws; fails the test if it throws none.
inline pool::ErrorCode code_of(auto&& fn) {
    try {
        fn();
    } catch (const pool::ServiceError& e) {
        return e.code();
    }
    FAIL("no ServiceError thrown");
    return pool::ErrorCode::internal;
}

// The field the ServiceError `fn` throws names ("" if none), or "no error".
inline std::string field_of(auto&& fn) {
    try {
        fn();
    } catch (const pool::ServiceError& e) {
        return e.field().value_or("");
    }
    return "no error";
}

}  // namespace forkvm::test
