#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "config/config.hpp"
#include "config/key_table.hpp"

namespace {

std::string read_docs() {
    // __FILE__ is tests/unit/config_docs_test.cpp inside the source tree.
    const auto path =
        std::filesystem::path(__FILE__).parent_path() / ".." / ".." / "docs" / "configuration.md";
    std::ifstream in(path);
    std::ostringstream text;
    text << in.rdbuf();
    return text.str();
}

}  // namespace

TEST_CASE("config: docs/configuration.md lists every key exactly as the table says") {
    const std::string docs = read_docs();
    REQUIRE_MESSAGE(!docs.empty(), "docs/configuration.md not found");
    const std::string begin = "<!-- BEGIN KEY TABLE -->\n";
    const std::string end = "<!-- END KEY TABLE -->";
    const auto b = docs.find(begin);
    const auto e = docs.find(end);
    REQUIRE(b != std::string::npos);
    REQUIRE(e != std::string::npos);
    REQUIRE(e > b);
    const std::string embedded = docs.substr(b + begin.size(), e - b - begin.size());
    // If this fails, paste forkvm::config::markdown_table() between the markers.
    CHECK(embedded == forkvm::config::markdown_table());
    for (const auto& key : forkvm::config::key_table()) {
        CHECK(embedded.find("`" + std::string(key.name) + "`") != std::string::npos);
        CHECK(embedded.find("`" + std::string(key.env) + "`") != std::string::npos);
        CHECK(embedded.find("`" + std::string(key.flag) + "`") != std::string::npos);
    }
}
