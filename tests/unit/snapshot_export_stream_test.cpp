// The export stream: a snapshot directory round-trips byte for byte; every
// kind of damage to the stream is refused with the right error kind.
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "snapshot/export_stream.hpp"
#include "snapshot/manifest.hpp"
#include "snapshot/snapshot_error.hpp"
#include "snapshot/state_file.hpp"
#include "tests/support/temp_dir.hpp"

using namespace forkvm::snapshot;
namespace fs = std::filesystem;

namespace {

struct TempDir : forkvm::test::TempDir {
    TempDir() : forkvm::test::TempDir("forkvm_export") {}
};

std::string slurp(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// A snapshot whose memory has a data page, 1 MiB of zeros, and a data page.
void make_snapshot(const fs::path& dir) {
    fs::create_directories(dir);
    std::string memory(4096, 'a');
    memory += std::string(1 << 20, '\0');
    memory += std::string(4096, 'z');
    std::ofstream(dir / "memory.bin", std::ios::binary) << memory;
    StateFile state;
    state.add_string("vm.config", "exported");
    (void)finalize_snapshot_dir(dir.string(), state, "test");
}

std::string export_of(const fs::path& dir, const nlohmann::json& meta = {{"labels", {{"a", "b"}}}}) {
    std::string out;
    write_export(dir.string(), meta, [&](std::span<const std::uint8_t> bytes) {
        out.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    });
    return out;
}

ExportSource source_of(const std::string& data) {
    auto offset = std::make_shared<std::size_t>(0);
    return [&data, offset](std::span<std::uint8_t> buffer) -> std::size_t {
        const std::size_t n = std::min(buffer.size(), data.size() - *offset);
        std::memcpy(buffer.data(), data.data() + *offset, n);
        *offset += n;
        return n;
    };
}

SnapshotErrorKind import_error(const std::string& data, const fs::path& into,
                               const ImportLimits& limits = {}) {
    try {
        (void)read_export(source_of(data), into.string(), limits);
    } catch (const SnapshotError& e) {
        fs::remove_all(into);
        return e.kind();
    }
    fs::remove_all(into);
    FAIL("the import succeeded");
    return SnapshotErrorKind::io;
}

std::string deflate_raw(const std::string& plain) {
    uLongf size = compressBound(static_cast<uLong>(plain.size()));
    std::string out(size, '\0');
    REQUIRE(compress2(reinterpret_cast<Bytef*>(out.data()), &size,
                      reinterpret_cast<const Bytef*>(plain.data()), static_cast<uLong>(plain.size()),
                      1) == Z_OK);
    out.resize(size);
    return out;
}

std::string inflate_raw(const std::string& compressed) {
    std::string out(64 << 20, '\0');
    uLongf size = static_cast<uLongf>(out.size());
    REQUIRE(uncompress(reinterpret_cast<Bytef*>(out.data()), &size,
                       reinterpret_cast<const Bytef*>(compressed.data()),
                       static_cast<uLong>(compressed.size())) == Z_OK);
    out.resize(size);
    return out;
}

}  // namespace

TEST_CASE("export stream: a snapshot round-trips exactly, memory stays sparse") {
    const TempDir tmp;
    make_snapshot(tmp.path / "src");
    const std::string stream = export_of(tmp.path / "src");
    CHECK(stream.size() < 64 * 1024);  // 1 MiB of zeros compresses away
    const auto meta = read_export(source_of(stream), (tmp.path / "dst").string());
    CHECK(meta["labels"]["a"] == "b");
    for (const char* name : {"manifest.json", "state.bin", "memory.bin"}) {
        CHECK(slurp(tmp.path / "src" / name) == slurp(tmp.path / "dst" / name));
    }
    struct stat st {};
    REQUIRE(::stat((tmp.path / "dst" / "memory.bin").c_str(), &st) == 0);
    CHECK(st.st_size == 4096 + (1 << 20) + 4096);
    CHECK(static_cast<long>(st.st_blocks) * 512 < 512 * 1024);  // the zero MiB is a hole
    CHECK_NOTHROW((void)verify_snapshot_dir((tmp.path / "dst").string(), true));
}

TEST_CASE("export stream: truncation, flipped bytes, trailing bytes and wrong magic are refused") {
    const TempDir tmp;
    make_snapshot(tmp.path / "src");
    const std::string stream = export_of(tmp.path / "src");
    const auto into = tmp.path / "dst";
    for (const std::size_t cut :
         {std::size_t{0}, std::size_t{1}, std::size_t{10}, stream.size() / 2, stream.size() - 1}) {
        CAPTURE(cut);
        const auto kind = import_error(stream.substr(0, cut), into);
        CHECK((kind == SnapshotErrorKind::truncated || kind == SnapshotErrorKind::corrupt));
    }
    // A flipped byte must be refused, unless zlib never reads it (padding
    // bits): then the import must be exactly the original.
    for (std::size_t at = 2; at < stream.size(); at += stream.size() / 17 + 1) {
        CAPTURE(at);
        std::string bad = stream;
        bad[at] = static_cast<char>(bad[at] ^ 0x10);
        try {
            (void)read_export(source_of(bad), into.string());
            CHECK(slurp(into / "memory.bin") == slurp(tmp.path / "src" / "memory.bin"));
            CHECK(slurp(into / "state.bin") == slurp(tmp.path / "src" / "state.bin"));
        } catch (const SnapshotError& e) {
            CHECK(e.kind() != SnapshotErrorKind::io);
        }
        fs::remove_all(into);
    }
    CHECK(import_error(stream + "x", into) == SnapshotErrorKind::corrupt);
    CHECK(import_error("not zlib at all, just text", into) == SnapshotErrorKind::corrupt);
    CHECK(import_error(deflate_raw("GIF89a and then some other bytes"), into) ==
          SnapshotErrorKind::wrong_magic);

    // A flipped byte inside the stored data, re-compressed so zlib is happy:
    // only the trailer (or the snapshot's own checks) can tell.
    std::string plain = inflate_raw(stream);
    plain[plain.size() - 40] = static_cast<char>(plain[plain.size() - 40] ^ 1);  // last memory page
    CHECK(import_error(deflate_raw(plain), into) == SnapshotErrorKind::corrupt);
}

TEST_CASE("export stream: header checks (versions, file list, limits)") {
    const TempDir tmp;
    make_snapshot(tmp.path / "src");
    const std::string plain = inflate_raw(export_of(tmp.path / "src"));
    const auto byte = [&](std::size_t i) {
        return static_cast<std::uint32_t>(static_cast<std::uint8_t>(plain[i]));
    };
    const std::uint32_t length = byte(16) | (byte(17) << 8) | (byte(18) << 16) | (byte(19) << 24);
    const auto header = nlohmann::json::parse(plain.substr(20, length));
    const std::string rest = plain.substr(20 + length);
    // A stream with another header (its trailer no longer matters: the header is checked first).
    const auto with_header = [&](const nlohmann::json& h) {
        const std::string text = h.dump();
        std::string out = plain.substr(0, 16);
        const auto n = static_cast<std::uint32_t>(text.size());
        out += static_cast<char>(n & 0xff);
        out += static_cast<char>((n >> 8) & 0xff);
        out += static_cast<char>((n >> 16) & 0xff);
        out += static_cast<char>((n >> 24) & 0xff);
        return deflate_raw(out + text + rest);
    };
    const auto into = tmp.path / "dst";
    auto h = header;
    h["stream_format"] = 2;
    CHECK(import_error(with_header(h), into) == SnapshotErrorKind::unsupported_version);
    h = header;
    h["snapshot_format"] = kFormatVersion + 1;
    CHECK(import_error(with_header(h), into) == SnapshotErrorKind::unsupported_version);
    h = header;
    h["files"][2]["name"] = "../../etc/passwd";
    CHECK(import_error(with_header(h), into) == SnapshotErrorKind::corrupt);
    h = header;
    h["files"].erase(1);
    CHECK(import_error(with_header(h), into) == SnapshotErrorKind::corrupt);
    h = header;
    h["files"][0]["size"] = -5;
    CHECK(import_error(with_header(h), into) == SnapshotErrorKind::corrupt);
    CHECK(import_error(with_header("just a string"), into) == SnapshotErrorKind::corrupt);
    ImportLimits small;
    small.max_memory_bytes = 4096;
    CHECK(import_error(with_header(header), into, small) == SnapshotErrorKind::too_large);
    // The unchanged header passes (sanity check of the helper).
    CHECK_NOTHROW((void)read_export(source_of(with_header(header)), into.string()));
}
