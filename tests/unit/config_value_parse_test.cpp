#include <chrono>
#include <doctest/doctest.h>
#include <string>

#include "config/suggest.hpp"
#include "config/value_parse.hpp"

using namespace forkvm::config;
using namespace std::chrono_literals;

TEST_CASE("config: parse_size accepts plain bytes and binary units") {
    std::string error;
    CHECK(parse_size("4096", &error) == 4096U);
    CHECK(parse_size("0", &error) == 0U);
    CHECK(parse_size("10B", &error) == 10U);
    CHECK(parse_size("16KiB", &error) == 16U * 1024);
    CHECK(parse_size("16k", &error) == 16U * 1024);
    CHECK(parse_size("64MiB", &error) == 64ULL << 20);
    CHECK(parse_size("64mb", &error) == 64ULL << 20);
    CHECK(parse_size("1G", &error) == 1ULL << 30);
    CHECK(parse_size("1GiB", &error) == 1ULL << 30);
    CHECK(parse_size("2TiB", &error) == 2ULL << 40);
}

TEST_CASE("config: parse_size rejects malformed values with a reason") {
    for (const char* bad : {"12XB", "-1", "1e3", "", "1.5G", " 1G", "1G ", "G", "+5", "0x10", "1 G"}) {
        std::string error;
        CHECK_MESSAGE(!parse_size(bad, &error), bad);
        CHECK_MESSAGE(!error.empty(), bad);
    }
    std::string error;
    CHECK(!parse_size("18446744073709551616", &error));  // 2^64
    CHECK(error == "number too large");
    CHECK(!parse_size("17179869184GiB", &error));  // 2^34 GiB = 2^64 bytes
    CHECK(error == "size too large");
    CHECK(parse_size("18446744073709551615", &error) == 18446744073709551615ULL);
}

TEST_CASE("config: parse_duration accepts ms, s, m, h, d and plain milliseconds") {
    std::string error;
    CHECK(parse_duration("500ms", &error) == 500ms);
    CHECK(parse_duration("500", &error) == 500ms);
    CHECK(parse_duration("30s", &error) == 30s);
    CHECK(parse_duration("5m", &error) == 5min);
    CHECK(parse_duration("24h", &error) == 24h);
    CHECK(parse_duration("2d", &error) == 48h);
    CHECK(parse_duration("30S", &error) == 30s);
    CHECK(parse_duration("0", &error) == 0ms);
}

TEST_CASE("config: parse_duration rejects malformed values") {
    for (const char* bad : {"", "-1", "1e3", "1.5s", "5x", "s", "5 s", "1h30m", "9223372036854775808",
                            "9223372036854775807s"}) {
        std::string error;
        CHECK_MESSAGE(!parse_duration(bad, &error), bad);
        CHECK_MESSAGE(!error.empty(), bad);
    }
    std::string error;
    CHECK(parse_duration("9223372036854775807", &error) == std::chrono::milliseconds(9223372036854775807LL));
}

TEST_CASE("config: parse_int is strict about form and range") {
    std::string error;
    CHECK(parse_int("42", &error) == 42);
    CHECK(parse_int("-7", &error) == -7);
    for (const char* bad : {"", "1e3", "4.0", "+4", " 4", "4 ", "0x10", "ten", "9223372036854775808"}) {
        CHECK_MESSAGE(!parse_int(bad, &error), bad);
    }
    CHECK(!parse_int("99999999999999999999", &error));
    CHECK(error == "number too large");
}

TEST_CASE("config: parse_bool accepts the usual spellings only") {
    std::string error;
    CHECK(parse_bool("true", &error) == true);
    CHECK(parse_bool("ON", &error) == true);
    CHECK(parse_bool("1", &error) == true);
    CHECK(parse_bool("no", &error) == false);
    CHECK(parse_bool("False", &error) == false);
    CHECK(!parse_bool("", &error));
    CHECK(!parse_bool("2", &error));
    CHECK(!parse_bool("yess", &error));
}

TEST_CASE("config: split_list trims items and drops empty ones") {
    CHECK(split_list("a, b ,c") == std::vector<std::string>{"a", "b", "c"});
    CHECK(split_list("") == std::vector<std::string>{});
    CHECK(split_list(",,a,,") == std::vector<std::string>{"a"});
}

TEST_CASE("config: valid_host_port checks host and port") {
    std::string error;
    CHECK(valid_host_port("127.0.0.1:8080", &error));
    CHECK(valid_host_port("localhost:0", &error));
    CHECK(valid_host_port("[::1]:443", &error));
    CHECK(valid_host_port("api.example.com:65535", &error));
    for (const char* bad : {"", "8080", ":8080", "host:", "host:65536", "host:-1", "host:http", "::1:80",
                            "[::1]", "[zz]:80", "bad host:80", "a..b:80"}) {
        CHECK_MESSAGE(!valid_host_port(bad, &error), bad);
    }
}

TEST_CASE("config: format_size and format_duration round-trip through the parsers") {
    std::string error;
    for (std::uint64_t bytes :
         {0ULL, 1ULL, 1000ULL, 1024ULL, 16384ULL, 1048576ULL, 3ULL << 30, (1ULL << 40) + 1}) {
        CHECK(parse_size(format_size(bytes), &error) == bytes);
    }
    CHECK(format_size(16384) == "16KiB");
    CHECK(format_size(1500) == "1500");
    for (auto d : {0ms, 1ms, 1500ms, 30000ms, 600000ms, 86400000ms, 3600001ms}) {
        CHECK(parse_duration(format_duration(d), &error) == d);
    }
    CHECK(format_duration(30s) == "30s");
    CHECK(format_duration(10min) == "10m");
    CHECK(format_duration(1500ms) == "1500ms");
}

TEST_CASE("config: quote_for_message escapes and bounds untrusted text") {
    CHECK(quote_for_message("ab\"c") == "\"ab\\\"c\"");
    CHECK(quote_for_message(std::string("a\0b", 3)) == "\"a\\x00b\"");
    const std::string long_text(1000, 'x');
    CHECK(quote_for_message(long_text).size() < 80);
}

TEST_CASE("config: closest_match suggests near misses only") {
    const std::array<std::string_view, 3> names = {"pool.max_warm", "pool.min_warm", "server.listen"};
    CHECK(closest_match("pool.max_wram", names) == std::optional<std::string_view>("pool.max_warm"));
    CHECK(closest_match("server.lisen", names) == std::optional<std::string_view>("server.listen"));
    CHECK(!closest_match("completely.different", names));
    CHECK(!closest_match(std::string(500, 'a'), names));
}
