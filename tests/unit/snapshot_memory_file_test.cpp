// memory.bin checks and SHA-256 helpers.

#include <unistd.h>

#include <cstdint>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "snapshot/memory_file.hpp"
#include "snapshot/sha256.hpp"
#include "snapshot/snapshot_error.hpp"

namespace fs = std::filesystem;
using forkvm::snapshot::SnapshotError;
using forkvm::snapshot::SnapshotErrorKind;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "forkvm_snapshot_mem_XXXXXX").string();
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

void write_bytes(const fs::path& path, const std::string& content) {
    std::ofstream out(path, std::ios::binary);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
    REQUIRE(out.good());
}

SnapshotErrorKind memory_error_kind(const fs::path& path, std::uint64_t expected) {
    try {
        forkvm::snapshot::check_memory_file(path.string(), expected);
    } catch (const SnapshotError& e) {
        CHECK(e.file() == path.string());
        return e.kind();
    }
    FAIL("check_memory_file accepted the file");
    return SnapshotErrorKind::io;
}

}  // namespace

TEST_CASE("snapshot: memory file of the expected size passes") {
    TempDir dir;
    fs::path path = dir.path / "memory.bin";
    write_bytes(path, std::string(8192, '\0'));
    CHECK_NOTHROW(forkvm::snapshot::check_memory_file(path.string(), 8192));
}

TEST_CASE("snapshot: memory file missing, short, long or a directory is refused") {
    TempDir dir;
    fs::path path = dir.path / "memory.bin";
    CHECK(memory_error_kind(path, 4096) == SnapshotErrorKind::not_found);

    write_bytes(path, std::string(4095, 'x'));
    CHECK(memory_error_kind(path, 4096) == SnapshotErrorKind::truncated);

    write_bytes(path, std::string(4097, 'x'));
    CHECK(memory_error_kind(path, 4096) == SnapshotErrorKind::corrupt);

    fs::path subdir = dir.path / "memory.dir";
    fs::create_directory(subdir);
    CHECK(memory_error_kind(subdir, 4096) == SnapshotErrorKind::io);
}

TEST_CASE("snapshot: sha256 of known content matches the published digests") {
    using forkvm::snapshot::sha256;
    using forkvm::snapshot::to_hex;
    CHECK(to_hex(sha256({})) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    std::string abc = "abc";
    CHECK(to_hex(sha256(std::span(reinterpret_cast<const std::uint8_t*>(abc.data()), abc.size()))) ==
          "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");

    TempDir dir;
    fs::path path = dir.path / "memory.bin";
    write_bytes(path, std::string(1'000'000, 'a'));  // FIPS 180-2 test vector
    CHECK(to_hex(forkvm::snapshot::sha256_file(path.string())) ==
          "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST_CASE("snapshot: sha256_file over several chunks equals the in-memory digest") {
    TempDir dir;
    fs::path path = dir.path / "memory.bin";
    std::string content(3 * (1 << 20) + 12345, '\0');
    for (std::size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>((i * 31) ^ (i >> 11));
    write_bytes(path, content);
    auto expected = forkvm::snapshot::sha256(
        std::span(reinterpret_cast<const std::uint8_t*>(content.data()), content.size()));
    CHECK(forkvm::snapshot::sha256_file(path.string()) == expected);
}

TEST_CASE("snapshot: sha256_file of a missing file is not_found") {
    TempDir dir;
    try {
        (void)forkvm::snapshot::sha256_file((dir.path / "nope").string());
        FAIL("hashing a missing file succeeded");
    } catch (const SnapshotError& e) {
        CHECK(e.kind() == SnapshotErrorKind::not_found);
    }
}

TEST_CASE("snapshot: hex digests round trip and bad hex is refused") {
    forkvm::snapshot::Sha256Digest digest{};
    for (std::size_t i = 0; i < digest.size(); ++i) digest[i] = static_cast<std::uint8_t>(i * 9);
    forkvm::snapshot::Sha256Digest back{};
    REQUIRE(forkvm::snapshot::from_hex(forkvm::snapshot::to_hex(digest), back));
    CHECK(back == digest);
    CHECK_FALSE(forkvm::snapshot::from_hex("abc", back));
    CHECK_FALSE(forkvm::snapshot::from_hex(std::string(64, 'g'), back));
}
