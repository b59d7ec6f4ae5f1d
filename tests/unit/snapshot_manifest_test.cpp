// The snapshot directory: finalize writes state.bin + manifest.json over an
// existing memory.bin; verify_snapshot_dir checks them, deep or not.

#include <unistd.h>

#include <cstdint>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <string>

#include "snapshot/manifest.hpp"
#include "snapshot/snapshot_error.hpp"
#include "snapshot/state_file.hpp"

namespace fs = std::filesystem;
using forkvm::snapshot::Manifest;
using forkvm::snapshot::SnapshotError;
using forkvm::snapshot::SnapshotErrorKind;
using forkvm::snapshot::StateFile;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "forkvm_snapshot_dir_XXXXXX").string();
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

void flip_byte(const fs::path& path, std::streamoff offset) {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(offset);
    char c = 0;
    f.get(c);
    f.seekp(offset);
    f.put(static_cast<char>(c ^ 0x40));
    REQUIRE(f.good());
}

// A snapshot directory with 64 KiB of "guest memory" and two sections.
Manifest make_snapshot(const fs::path& dir, char fill = 'm') {
    write_bytes(dir / "memory.bin", std::string(65536, fill));
    StateFile state;
    state.add_string("vm.config", std::string("config-") + fill);
    state.add_u64("vcpu.0.tsc_khz", 2'000'000);
    return forkvm::snapshot::finalize_snapshot_dir(dir.string(), state, "0.1.0-test");
}

SnapshotErrorKind verify_error_kind(const fs::path& dir, bool deep) {
    try {
        (void)forkvm::snapshot::verify_snapshot_dir(dir.string(), deep);
    } catch (const SnapshotError& e) {
        return e.kind();
    }
    FAIL("verify_snapshot_dir accepted the directory");
    return SnapshotErrorKind::io;
}

}  // namespace

TEST_CASE("snapshot: finalized directory verifies shallow and deep") {
    TempDir dir;
    Manifest written = make_snapshot(dir.path);
    CHECK(written.memory_size == 65536);
    CHECK(written.product_version == "0.1.0-test");
    CHECK(written.created_unix > 1'600'000'000);

    for (bool deep : {false, true}) {
        auto verified = forkvm::snapshot::verify_snapshot_dir(dir.path.string(), deep);
        CHECK(verified.manifest == written);
        CHECK(verified.state.get_string("vm.config") == "config-m");
        CHECK(verified.state.get_u64("vcpu.0.tsc_khz") == 2'000'000);
    }
}

TEST_CASE("snapshot: manifest JSON round trips") {
    TempDir dir;
    Manifest written = make_snapshot(dir.path);
    std::string json = forkvm::snapshot::manifest_to_json(written);
    CHECK(forkvm::snapshot::manifest_from_json(json, "manifest.json") == written);
    CHECK(forkvm::snapshot::read_manifest((dir.path / "manifest.json").string()) == written);
}

TEST_CASE("snapshot: a corrupted memory file is caught only by the deep check") {
    TempDir dir;
    make_snapshot(dir.path);
    flip_byte(dir.path / "memory.bin", 40000);
    CHECK_NOTHROW((void)forkvm::snapshot::verify_snapshot_dir(dir.path.string(), false));
    CHECK(verify_error_kind(dir.path, true) == SnapshotErrorKind::corrupt);
}

TEST_CASE("snapshot: missing or wrong-size files fail the shallow check") {
    TempDir dir;
    CHECK(verify_error_kind(dir.path / "absent", false) == SnapshotErrorKind::not_found);

    make_snapshot(dir.path);
    fs::resize_file(dir.path / "memory.bin", 4096);
    CHECK(verify_error_kind(dir.path, false) == SnapshotErrorKind::truncated);
    fs::remove(dir.path / "memory.bin");
    CHECK(verify_error_kind(dir.path, false) == SnapshotErrorKind::not_found);

    make_snapshot(dir.path);
    fs::remove(dir.path / "state.bin");
    CHECK(verify_error_kind(dir.path, false) == SnapshotErrorKind::not_found);

    make_snapshot(dir.path);
    fs::remove(dir.path / "manifest.json");
    CHECK(verify_error_kind(dir.path, false) == SnapshotErrorKind::not_found);
}

TEST_CASE("snapshot: a corrupted or foreign state file fails the shallow check") {
    TempDir dir;
    make_snapshot(dir.path);
    flip_byte(dir.path / "state.bin", 50);
    CHECK(verify_error_kind(dir.path, false) == SnapshotErrorKind::corrupt);

    // state.bin from another snapshot: valid on its own, but not this one's.
    TempDir other;
    make_snapshot(other.path, 'o');
    make_snapshot(dir.path);
    fs::copy_file(other.path / "state.bin", dir.path / "state.bin", fs::copy_options::overwrite_existing);
    try {
        (void)forkvm::snapshot::verify_snapshot_dir(dir.path.string(), false);
        FAIL("foreign state.bin accepted");
    } catch (const SnapshotError& e) {
        CHECK(e.kind() == SnapshotErrorKind::corrupt);
        CHECK(std::string(e.what()).find("does not match the manifest") != std::string::npos);
    }
}

TEST_CASE("snapshot: bad manifests are typed errors") {
    TempDir dir;
    Manifest written = make_snapshot(dir.path);
    auto kind_of = [](const std::string& text) {
        try {
            (void)forkvm::snapshot::manifest_from_json(text, "manifest.json");
        } catch (const SnapshotError& e) {
            return e.kind();
        }
        FAIL("manifest accepted: " << text);
        return SnapshotErrorKind::io;
    };
    CHECK(kind_of("{not json") == SnapshotErrorKind::corrupt);
    CHECK(kind_of("[]") == SnapshotErrorKind::corrupt);
    CHECK(kind_of(R"({"format":"other","format_version":1})") == SnapshotErrorKind::wrong_magic);
    CHECK(kind_of(R"({"format":"forkvm-snapshot","format_version":2})") ==
          SnapshotErrorKind::unsupported_version);
    CHECK(kind_of(R"({"format":"forkvm-snapshot","format_version":0})") ==
          SnapshotErrorKind::unsupported_version);

    std::string json = forkvm::snapshot::manifest_to_json(written);
    std::string no_sha = json;
    no_sha.replace(no_sha.find("\"sha256\""), 8, "\"sha999\"");
    CHECK(kind_of(no_sha) == SnapshotErrorKind::corrupt);
    std::string negative = json;
    negative.replace(negative.find("65536"), 5, "-6553");
    CHECK(kind_of(negative) == SnapshotErrorKind::corrupt);

    write_bytes(dir.path / "manifest.json", "{}");
    CHECK(verify_error_kind(dir.path, false) == SnapshotErrorKind::corrupt);
    write_bytes(dir.path / "manifest.json", std::string(forkvm::snapshot::kMaxManifestSize + 1, ' '));
    CHECK(verify_error_kind(dir.path, false) == SnapshotErrorKind::too_large);
}

TEST_CASE("snapshot: finalize without a memory file is not_found") {
    TempDir dir;
    StateFile state;
    state.add_u32("x", 1);
    try {
        (void)forkvm::snapshot::finalize_snapshot_dir(dir.path.string(), state, "v");
        FAIL("finalize succeeded");
    } catch (const SnapshotError& e) {
        CHECK(e.kind() == SnapshotErrorKind::not_found);
    }
    CHECK_FALSE(fs::exists(dir.path / "manifest.json"));
}
