#include <doctest/doctest.h>

#include "pool/host_memory.hpp"

using forkvm::pool::parse_mem_available;

TEST_CASE("pool: MemAvailable is read from meminfo text in bytes") {
    const char* text =
        "MemTotal:       24568636 kB\n"
        "MemFree:         1000000 kB\n"
        "MemAvailable:   22610656 kB\n"
        "Buffers:          123456 kB\n";
    CHECK(parse_mem_available(text) == 22610656ULL * 1024);
    CHECK(parse_mem_available("MemAvailable: 0 kB\n") == 0U);
}

TEST_CASE("pool: malformed or missing MemAvailable lines give no number") {
    CHECK_FALSE(parse_mem_available(""));
    CHECK_FALSE(parse_mem_available("MemTotal: 5 kB\n"));
    CHECK_FALSE(parse_mem_available("XMemAvailable: 5 kB\n"));
    CHECK_FALSE(parse_mem_available("MemAvailable: lots kB\n"));
    CHECK_FALSE(parse_mem_available("MemAvailable: 5 MB\n"));
    CHECK_FALSE(parse_mem_available("MemAvailable: 99999999999999999999999 kB\n"));
    CHECK_FALSE(parse_mem_available("MemAvailable:"));
    // A look-alike key inside another line does not count; the real one after it does.
    CHECK(parse_mem_available("Foo: 1 kB MemAvailable: 7 kB\nMemAvailable: 9 kB\n") == 9U * 1024);
}

TEST_CASE("pool: the host's own meminfo has a MemAvailable") {
    const auto available = forkvm::pool::host_mem_available();
    REQUIRE(available);
    CHECK(*available > 0U);
}
