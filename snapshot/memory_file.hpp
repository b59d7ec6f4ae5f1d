#pragma once
// Checks on memory.bin, the raw guest RAM that clones mmap MAP_PRIVATE. A
// mapping past EOF SIGBUSes the clone on first touch, so the size is checked
// against the manifest before any mapping is made.

#include <cstdint>
#include <string>

namespace forkvm::snapshot {

// Throws SnapshotError: not_found (missing), io (not a regular file, or
// stat failed), truncated (smaller than expected_size), corrupt (larger).
// Cheap: one stat, no page is read.
void check_memory_file(const std::string& path, std::uint64_t expected_size);

}  // namespace forkvm::snapshot
