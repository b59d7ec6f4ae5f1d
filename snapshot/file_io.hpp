#pragma once
// Whole-file reads with a size cap and atomic whole-file writes. Both report
// failures as SnapshotError naming the path.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace forkvm::snapshot {

// Writes bytes to path atomically: a temp file in the same directory
// ("<name>.tmp.XXXXXX", mode 0600), write, fsync, rename over path, fsync the
// directory. On any failure the temp file is removed and an existing file at
// path is left untouched, so a reader sees the old file or the new one,
// never a half-written one. Throws SnapshotError (io).
void write_file_atomic(const std::string& path, std::span<const std::uint8_t> bytes);

// Reads a regular file whole. The size is checked with fstat before anything
// is read or allocated: larger than max_size -> too_large. Missing ->
// not_found, not a regular file or a failed read -> io, a file that shrinks
// while being read -> truncated.
[[nodiscard]] std::vector<std::uint8_t> read_file_capped(const std::string& path, std::size_t max_size);

}  // namespace forkvm::snapshot
