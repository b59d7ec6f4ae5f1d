// cli/proc_memory.hpp: reading Pss and Rss from /proc/PID/smaps_rollup.

#include <unistd.h>

#include <cstring>
#include <doctest/doctest.h>
#include <memory>
#include <string>

#include "cli/proc_memory.hpp"

using forkvm::cli::parse_smaps_rollup;

namespace {

constexpr const char* kRollup =
    "55b3f1194000-7ffe71e87000 ---p 00000000 00:00 0                          [rollup]\n"
    "Rss:                1780 kB\n"
    "Pss:                 414 kB\n"
    "Pss_Dirty:           112 kB\n"
    "Pss_Anon:            112 kB\n"
    "Shared_Clean:       1572 kB\n"
    "SwapPss:               0 kB\n";

}  // namespace

TEST_CASE("cli: smaps_rollup Pss and Rss are read, not the Pss_* or SwapPss lines") {
    auto m = parse_smaps_rollup(kRollup);
    REQUIRE(m.has_value());
    CHECK(m->pss_kb == 414);
    CHECK(m->rss_kb == 1780);
}

TEST_CASE("cli: smaps_rollup without a Pss or Rss line, or with a bad number, is rejected") {
    CHECK_FALSE(parse_smaps_rollup("").has_value());
    CHECK_FALSE(parse_smaps_rollup("Rss: 10 kB\n").has_value());
    CHECK_FALSE(parse_smaps_rollup("Pss: 10 kB\nPss_Anon: 3 kB\n").has_value());
    CHECK_FALSE(parse_smaps_rollup("Rss: 10 kB\nPss: ten kB\n").has_value());
    CHECK_FALSE(parse_smaps_rollup("Rss: 10 kB\nPss: 10 MB\n").has_value());
    CHECK_FALSE(parse_smaps_rollup("Rss: 10 kB\nPss: 99999999999999999999999 kB\n").has_value());
    CHECK_FALSE(parse_smaps_rollup("Rss: 10 kB\nPss:\n").has_value());
}

TEST_CASE("cli: smaps_rollup without a final newline still parses") {
    auto m = parse_smaps_rollup("Pss: 7 kB\nRss: 9 kB");
    REQUIRE(m.has_value());
    CHECK(m->pss_kb == 7);
    CHECK(m->rss_kb == 9);
}

TEST_CASE("cli: our own process's Rss grows when we touch memory") {
    auto before = forkvm::cli::read_proc_memory(::getpid());
    REQUIRE(before.has_value());
    CHECK(before->pss_kb > 0);
    CHECK(before->rss_kb >= before->pss_kb);
    constexpr std::size_t kBytes = 32 << 20;
    auto block = std::make_unique<char[]>(kBytes);
    std::memset(block.get(), 1, kBytes);
    auto after = forkvm::cli::read_proc_memory(::getpid());
    REQUIRE(after.has_value());
    // Rss, not Pss: our Pss of shared pages (libraries, ASan's runtime) falls
    // when another process maps them meanwhile (ctest -j runs tests side by
    // side), by more than 30 MiB under ASan; Rss only counts what we hold.
    CHECK(after->rss_kb >= before->rss_kb + 30 * 1024);
    CHECK(after->pss_kb > 0);
    CHECK(block[kBytes - 1] == 1);
}

TEST_CASE("cli: memory of a process that does not exist is absent") {
    CHECK_FALSE(forkvm::cli::read_proc_memory(-1).has_value());
    CHECK_FALSE(forkvm::cli::read_proc_memory(0x3fffffff).has_value());
}
