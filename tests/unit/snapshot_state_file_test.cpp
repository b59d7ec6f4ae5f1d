// state.bin container: round trip, atomic write, and every error kind the
// reader must report instead of crashing or allocating on hostile input.

#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "snapshot/sha256.hpp"
#include "snapshot/snapshot_error.hpp"
#include "snapshot/state_file.hpp"
#include "snapshot/tags.hpp"

namespace fs = std::filesystem;
using forkvm::snapshot::ParseOptions;
using forkvm::snapshot::SnapshotError;
using forkvm::snapshot::SnapshotErrorKind;
using forkvm::snapshot::StateFile;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "forkvm_snapshot_sf_XXXXXX").string();
        REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
};

std::vector<std::uint8_t> bytes_of(std::string_view s) { return {s.begin(), s.end()}; }

// Recomputes the trailer so a test can reach the structure checks behind
// the checksum with a deliberately malformed body.
void reseal(std::vector<std::uint8_t>& file) {
    auto body = std::span<const std::uint8_t>(file).first(file.size() - forkvm::snapshot::kTrailerSize);
    auto digest = forkvm::snapshot::sha256(body);
    std::copy(digest.begin(), digest.end(), file.end() - forkvm::snapshot::kTrailerSize);
}

void put_u32(std::vector<std::uint8_t>& b, std::size_t off, std::uint32_t v) {
    for (std::size_t i = 0; i < 4; ++i) b[off + i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put_u16(std::vector<std::uint8_t>& b, std::size_t off, std::uint16_t v) {
    b[off] = static_cast<std::uint8_t>(v);
    b[off + 1] = static_cast<std::uint8_t>(v >> 8);
}

SnapshotErrorKind parse_error_kind(std::span<const std::uint8_t> bytes, const ParseOptions& options = {}) {
    try {
        (void)StateFile::parse(bytes, "state.bin", options);
    } catch (const SnapshotError& e) {
        return e.kind();
    }
    FAIL("parse succeeded but an error was expected");
    return SnapshotErrorKind::io;
}

std::string parse_error_message(std::span<const std::uint8_t> bytes) {
    try {
        (void)StateFile::parse(bytes, "state.bin");
    } catch (const SnapshotError& e) {
        return e.what();
    }
    FAIL("parse succeeded but an error was expected");
    return {};
}

struct Regs {
    std::uint64_t rax, rbx, rip;
    std::uint32_t flags;
};

StateFile sample_state() {
    StateFile file;
    file.add_string("vm.config", R"({"memory_mib":256,"vcpus":2})");
    file.add_u32("vcpu.count", 2);
    file.add_u64(forkvm::snapshot::tags::vcpu_tag(0, "tsc_khz"), 2'995'200);
    std::vector<std::uint8_t> all_bytes(256);
    for (std::size_t i = 0; i < all_bytes.size(); ++i) all_bytes[i] = static_cast<std::uint8_t>(i);
    file.add("cpuid", all_bytes);
    file.add("empty", {});
    // Every length 1..17 exercises each padding amount.
    for (std::size_t len = 1; len <= 17; ++len) {
        std::vector<std::uint8_t> data(len, static_cast<std::uint8_t>(0xA0 + len));
        file.add("pad." + std::to_string(len), data);
    }
    std::vector<std::uint8_t> big(100'003);
    for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<std::uint8_t>((i * 7919) >> 3);
    file.add(forkvm::snapshot::tags::vcpu_tag(1, "xsave"), big);
    file.add_struct("vcpu.0.regs", Regs{1, 0xFFFF'FFFF'FFFF'FFFF, 0xFFF0, 0x202});
    return file;
}

}  // namespace

TEST_CASE("snapshot: state file round trips many sections with binary data") {
    StateFile original = sample_state();
    std::vector<std::uint8_t> bytes = original.serialize();
    CHECK(bytes.size() % forkvm::snapshot::kAlignment == 0);
    CHECK(std::string(bytes.begin(), bytes.begin() + 8) == "FKVMSNAP");

    StateFile parsed = StateFile::parse(bytes, "state.bin");
    REQUIRE(parsed.size() == original.size());
    CHECK(parsed.sections() == original.sections());  // same order, same bytes
    CHECK(parsed.get_string("vm.config") == R"({"memory_mib":256,"vcpus":2})");
    CHECK(parsed.get_u32("vcpu.count") == 2);
    CHECK(parsed.get_u64("vcpu.0.tsc_khz") == 2'995'200);
    CHECK(parsed.section("empty").empty());
    CHECK(parsed.section("cpuid")[255] == 255);
    CHECK(parsed.section("vcpu.1.xsave").size() == 100'003);
    auto regs = parsed.get_struct<Regs>("vcpu.0.regs");
    CHECK(regs.rbx == 0xFFFF'FFFF'FFFF'FFFF);
    CHECK(regs.rip == 0xFFF0);
    CHECK(regs.flags == 0x202);
    // Serialisation is canonical: the same sections give the same bytes.
    CHECK(parsed.serialize() == bytes);
}

TEST_CASE("snapshot: state file with no sections round trips") {
    StateFile empty;
    auto bytes = empty.serialize();
    CHECK(bytes.size() == forkvm::snapshot::kHeaderSize + forkvm::snapshot::kTrailerSize);
    CHECK(StateFile::parse(bytes).size() == 0);
}

TEST_CASE("snapshot: integers are stored little-endian") {
    StateFile file;
    file.add_u32("a", 0x11223344);
    auto bytes = file.serialize();
    // header(40) + section header(8) + tag padded(8) -> data at 56.
    CHECK(bytes[56] == 0x44);
    CHECK(bytes[59] == 0x11);
}

TEST_CASE("snapshot: state file is written to disk and read back") {
    TempDir dir;
    std::string path = (dir.path / "state.bin").string();
    StateFile original = sample_state();
    original.write(path);
    StateFile parsed = StateFile::read(path);
    CHECK(parsed.sections() == original.sections());
    CHECK(parsed.source() == path);
    // Rewriting replaces the file and leaves no temp file behind.
    StateFile other;
    other.add_u32("x", 7);
    other.write(path);
    CHECK(StateFile::read(path).get_u32("x") == 7);
    CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);
}

TEST_CASE("snapshot: writing into a missing directory is an io error and creates nothing") {
    TempDir dir;
    std::string path = (dir.path / "no_such_dir" / "state.bin").string();
    try {
        sample_state().write(path);
        FAIL("write succeeded");
    } catch (const SnapshotError& e) {
        CHECK(e.kind() == SnapshotErrorKind::io);
        CHECK(std::string(e.what()).find("state.bin") != std::string::npos);
    }
    CHECK_FALSE(fs::exists(path));
}

TEST_CASE("snapshot: a write failing half way keeps the old file and leaves no temp file") {
    TempDir dir;
    std::string path = (dir.path / "state.bin").string();
    StateFile old_state;
    old_state.add_string("old", "previous snapshot");
    old_state.write(path);

    // RLIMIT_FSIZE makes write() fail with EFBIG after 4 KiB, even as root.
    struct rlimit saved {};
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &saved) == 0);
    auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
    struct rlimit limited = saved;
    limited.rlim_cur = 4096;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &limited) == 0);
    SnapshotErrorKind kind = SnapshotErrorKind::not_found;
    bool threw = false;
    try {
        sample_state().write(path);  // ~100 KiB
    } catch (const SnapshotError& e) {
        threw = true;
        kind = e.kind();
    }
    ::setrlimit(RLIMIT_FSIZE, &saved);
    std::signal(SIGXFSZ, old_handler);

    REQUIRE(threw);
    CHECK(kind == SnapshotErrorKind::io);
    CHECK(StateFile::read(path).get_string("old") == "previous snapshot");
    CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator{}) == 1);
}

TEST_CASE("snapshot: every truncation of a state file is reported as truncated") {
    StateFile file;
    file.add_string("vm.config", "cfg");
    file.add_u64("vcpu.0.tsc_khz", 1234);
    auto bytes = file.serialize();
    for (std::size_t len = 0; len < bytes.size(); ++len) {
        CAPTURE(len);
        CHECK(parse_error_kind(std::span(bytes).first(len)) == SnapshotErrorKind::truncated);
    }
}

TEST_CASE("snapshot: a flipped byte anywhere is detected") {
    StateFile file;
    file.add_string("vm.config", "cfg");
    file.add_u32("dev.uart0", 0x55);
    auto good = file.serialize();
    for (std::size_t off = 0; off < good.size(); ++off) {
        auto bad = good;
        bad[off] ^= 0x01;
        CAPTURE(off);
        bool threw = false;
        try {
            (void)StateFile::parse(bad, "state.bin");
        } catch (const SnapshotError& e) {
            threw = true;
            // Past the header, the checksum catches it.
            if (off >= forkvm::snapshot::kHeaderSize) CHECK(e.kind() == SnapshotErrorKind::corrupt);
        }
        CHECK(threw);
    }
    auto bad = good;
    bad[50] ^= 0x80;
    CHECK(parse_error_message(bad) == "state.bin: checksum mismatch (file corrupt)");
}

TEST_CASE("snapshot: wrong magic, wrong arch and unsupported versions get their own errors") {
    auto good = sample_state().serialize();
    auto bad = good;
    bad[0] = 'X';
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::wrong_magic);
    CHECK(parse_error_kind(bytes_of("ELF")) == SnapshotErrorKind::wrong_magic);
    CHECK(parse_error_kind(bytes_of("hello, this is plainly not a snapshot file at all")) ==
          SnapshotErrorKind::wrong_magic);

    bad = good;
    std::copy_n("aarch64", 7, bad.begin() + 8);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::wrong_arch);
    CHECK(parse_error_message(bad).find("x86_64") != std::string::npos);

    bad = good;
    put_u32(bad, 16, 2);
    reseal(bad);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::unsupported_version);
    CHECK(parse_error_message(bad).find("newer") != std::string::npos);

    bad = good;
    put_u32(bad, 16, 0);
    reseal(bad);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::unsupported_version);
    CHECK(parse_error_message(bad).find("older") != std::string::npos);

    bad = good;
    put_u32(bad, 20, 1);  // a flag version 1 does not define
    reseal(bad);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::unsupported_version);
}

TEST_CASE("snapshot: state larger than the cap is refused before reading") {
    auto bytes = sample_state().serialize();
    CHECK(parse_error_kind(bytes, ParseOptions{.max_size = 1024}) == SnapshotErrorKind::too_large);

    TempDir dir;
    std::string path = (dir.path / "state.bin").string();
    {
        // A sparse 1 TiB file: reading it would take forever, so passing
        // proves the size is checked first.
        std::ofstream out(path, std::ios::binary);
    }
    fs::resize_file(path, std::uintmax_t{1} << 40);
    try {
        (void)StateFile::read(path);
        FAIL("read succeeded");
    } catch (const SnapshotError& e) {
        CHECK(e.kind() == SnapshotErrorKind::too_large);
        CHECK(e.file() == path);
    }
}

TEST_CASE("snapshot: duplicate section tags in a file are corrupt") {
    StateFile file;
    file.add_u32("aa", 1);
    file.add_u32("ab", 2);
    auto bytes = file.serialize();
    // Second section starts at 40 + 8 + 8 + 8 = 64; its tag at 72.
    REQUIRE(bytes[73] == 'b');
    bytes[73] = 'a';
    reseal(bytes);
    CHECK(parse_error_kind(bytes) == SnapshotErrorKind::corrupt);
    CHECK(parse_error_message(bytes).find("duplicate section 'aa'") != std::string::npos);
}

TEST_CASE("snapshot: hostile lengths are rejected without allocating") {
    StateFile file;
    file.add_u32("aa", 1);
    const auto good = file.serialize();

    auto bad = good;
    put_u32(bad, 44, 0xFFFF'FFFF);  // data length of the first section
    reseal(bad);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::corrupt);

    bad = good;
    put_u16(bad, 40, 0xFFFF);  // tag length
    reseal(bad);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::corrupt);

    bad = good;
    put_u16(bad, 40, 0);  // empty tag
    reseal(bad);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::corrupt);

    bad = good;
    put_u32(bad, 24, 0xFFFF'FFFF);  // section count
    reseal(bad);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::corrupt);

    bad = good;
    put_u32(bad, 24, 2);  // one more section than present
    reseal(bad);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::corrupt);

    bad = good;
    put_u32(bad, 24, 0);  // fewer: the bytes after the last section are refused
    reseal(bad);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::corrupt);

    bad = good;
    for (std::size_t i = 32; i < 40; ++i) bad[i] = 0xFF;  // total length
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::truncated);

    bad = good;
    bad.push_back(0);  // trailing garbage
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::corrupt);
}

TEST_CASE("snapshot: non-canonical bytes (padding, reserved fields, tag characters) are corrupt") {
    StateFile file;
    file.add("a", bytes_of("xyz"));
    const auto good = file.serialize();

    auto bad = good;
    bad[49] = 1;  // tag padding after "a"
    reseal(bad);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::corrupt);

    bad = good;
    bad[59] = 1;  // data padding after "xyz"
    reseal(bad);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::corrupt);

    bad = good;
    bad[42] = 1;  // section reserved field
    reseal(bad);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::corrupt);

    bad = good;
    bad[28] = 1;  // header reserved field
    reseal(bad);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::corrupt);

    bad = good;
    bad[48] = '/';  // not a tag character
    reseal(bad);
    CHECK(parse_error_kind(bad) == SnapshotErrorKind::corrupt);
}

TEST_CASE("snapshot: checksum can be skipped only by explicit option") {
    auto bytes = sample_state().serialize();
    bytes.back() ^= 0xFF;
    CHECK(parse_error_kind(bytes) == SnapshotErrorKind::corrupt);
    CHECK(StateFile::parse(bytes, "state.bin", ParseOptions{.verify_checksum = false}).size() ==
          sample_state().size());
}

TEST_CASE("snapshot: a missing section is a typed error naming file and tag") {
    StateFile parsed = StateFile::parse(sample_state().serialize(), "state.bin");
    CHECK_FALSE(parsed.contains("vcpu.7.regs"));
    try {
        (void)parsed.section("vcpu.7.regs");
        FAIL("lookup succeeded");
    } catch (const SnapshotError& e) {
        CHECK(e.kind() == SnapshotErrorKind::missing_section);
        CHECK(std::string(e.what()) == "state.bin: missing section 'vcpu.7.regs'");
    }
    // A typed getter on a section of the wrong size is corrupt, not a read past the end.
    try {
        (void)parsed.get_u64("vcpu.count");
        FAIL("get_u64 on a 4-byte section succeeded");
    } catch (const SnapshotError& e) {
        CHECK(e.kind() == SnapshotErrorKind::corrupt);
    }
}

TEST_CASE("snapshot: reading a missing or non-regular state file") {
    TempDir dir;
    try {
        (void)StateFile::read((dir.path / "state.bin").string());
        FAIL("read succeeded");
    } catch (const SnapshotError& e) {
        CHECK(e.kind() == SnapshotErrorKind::not_found);
    }
    try {
        (void)StateFile::read(dir.path.string());
        FAIL("read of a directory succeeded");
    } catch (const SnapshotError& e) {
        CHECK(e.kind() == SnapshotErrorKind::io);
    }
}

TEST_CASE("snapshot: writer refuses bad tags and duplicates") {
    StateFile file;
    file.add_u32("ok.tag-1_A", 1);
    CHECK_THROWS_AS(file.add_u32("ok.tag-1_A", 2), std::invalid_argument);
    CHECK_THROWS_AS(file.add_u32("", 2), std::invalid_argument);
    CHECK_THROWS_AS(file.add_u32("has space", 2), std::invalid_argument);
    CHECK_THROWS_AS(file.add_u32(std::string(65, 'a'), 2), std::invalid_argument);
    file.add_u32(std::string(64, 'a'), 3);
    CHECK(StateFile::parse(file.serialize()).get_u32(std::string(64, 'a')) == 3);
}

TEST_CASE("snapshot: error kinds have stable names") {
    CHECK(forkvm::snapshot::kind_name(SnapshotErrorKind::unsupported_version) == "unsupported_version");
    CHECK(forkvm::snapshot::kind_name(SnapshotErrorKind::incompatible) == "incompatible");
    CHECK(forkvm::snapshot::tags::vcpu_tag(3, "lapic") == "vcpu.3.lapic");
}
