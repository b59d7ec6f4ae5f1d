#pragma once
// The snapshot directory: memory.bin (raw guest RAM), state.bin (StateFile)
// and manifest.json, which records sizes and SHA-256 digests computed once
// at snapshot time. The manifest is written last, so its presence marks a
// complete snapshot.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "snapshot/sha256.hpp"
#include "snapshot/state_file.hpp"

namespace forkvm::snapshot {

inline constexpr std::string_view kMemoryFileName = "memory.bin";
inline constexpr std::string_view kStateFileName = "state.bin";
inline constexpr std::string_view kManifestFileName = "manifest.json";
inline constexpr std::size_t kMaxManifestSize = std::size_t{64} << 10;
inline constexpr std::size_t kMaxProductVersionLength = 256;

struct Manifest {
    std::uint32_t format_version = kFormatVersion;  // same number as state.bin's header
    std::int64_t created_unix = 0;                  // seconds since the epoch (UTC)
    std::string product_version;                    // free form, e.g. "0.1.0"
    std::uint64_t memory_size = 0;
    Sha256Digest memory_sha256{};
    std::uint64_t state_size = 0;
    Sha256Digest state_sha256{};

    friend bool operator==(const Manifest&, const Manifest&) = default;
};

[[nodiscard]] std::string manifest_to_json(const Manifest& manifest);
// Throws SnapshotError: corrupt (bad JSON, missing or mistyped field),
// unsupported_version (format_version other than kFormatVersion).
[[nodiscard]] Manifest manifest_from_json(std::string_view text, const std::string& source);

void write_manifest(const std::string& path, const Manifest& manifest);  // atomic
[[nodiscard]] Manifest read_manifest(const std::string& path);           // capped at kMaxManifestSize

// Completes a snapshot directory whose memory.bin is already written and
// synced: writes state.bin (atomic), hashes memory.bin once (streaming) and
// state.bin, then writes manifest.json (atomic) as the commit point.
Manifest finalize_snapshot_dir(const std::string& dir, const StateFile& state,
                               std::string_view product_version);

struct VerifiedSnapshot {
    Manifest manifest;
    StateFile state;  // parsed and checksum-verified, ready for restore
};

// Always: the three files exist, memory.bin is a regular file of the size
// the manifest records, state.bin parses with a valid checksum and matches
// the manifest's size and digest. deep=true also hashes all of memory.bin
// against the manifest: that reads every page, so do it when a snapshot is
// created or imported, never on every restore (it would defeat lazy paging).
[[nodiscard]] VerifiedSnapshot verify_snapshot_dir(const std::string& dir, bool deep,
                                                   const ParseOptions& options = {});

}  // namespace forkvm::snapshot
