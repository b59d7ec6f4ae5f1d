#pragma once
// The export stream: one snapshot directory as a single, self-describing,
// zlib-compressed byte stream, for moving snapshots between servers
// (docs/snapshot-format.md, "Export stream").
//
// Uncompressed layout:
//   magic    "FORKVM-SNAPSHOT\n" (16 bytes)
//   u32 LE   header length H (1..kMaxExportHeader)
//   H bytes  header JSON: {"stream_format": 1, "snapshot_format": N,
//            "meta": {...the exporter's metadata...},
//            "files": [{"name": "manifest.json", "size": S}, {"name":
//            "state.bin", ...}, {"name": "memory.bin", ...}]}
//   the files' bytes, in that order
//   32 bytes SHA-256 of everything above
// compressed as one zlib stream (RFC 1950) with nothing after it.
//
// Reading trusts nothing: every size is bounded before anything is
// allocated or written, the file list must be exactly the three files, the
// trailer must match, and the zlib stream must end exactly there. Writing the
// files keeps memory.bin sparse (all-zero pages become holes). What the
// files hold is checked afterwards by verify_snapshot_dir (deep).

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <span>
#include <string>

namespace forkvm::snapshot {

inline constexpr std::uint32_t kExportStreamFormat = 1;
inline constexpr std::size_t kMaxExportHeader = 64 * 1024;

// Receives compressed output; throw to abort (e.g. the client went away).
using ExportSink = std::function<void(std::span<const std::uint8_t>)>;
// Fills the buffer with compressed input; returns 0 at the end.
using ExportSource = std::function<std::size_t(std::span<std::uint8_t>)>;

// Streams the snapshot in `dir` with `meta` in the header. Throws
// SnapshotError (not_found, io) for a missing or unreadable file.
void write_export(const std::string& dir, const nlohmann::json& meta, const ExportSink& sink);

struct ImportLimits {
    std::uint64_t max_memory_bytes = 64ULL << 30;
    std::uint64_t max_state_bytes = 64ULL << 20;
    std::uint64_t max_manifest_bytes = 64 * 1024;
};

// Reads an export stream into `dir` (created; must not exist) and returns
// the header's "meta". Throws SnapshotError: wrong_magic (not an export
// stream), unsupported_version, too_large, truncated, corrupt (bad zlib
// data, header, trailer or trailing bytes), io. On a throw `dir` may hold
// partial files: the caller removes it.
nlohmann::json read_export(const ExportSource& source, const std::string& dir,
                           const ImportLimits& limits = {});

}  // namespace forkvm::snapshot
