#include "snapshot/memory_file.hpp"

#include <sys/stat.h>

#include <cerrno>

#include "snapshot/snapshot_error.hpp"

namespace forkvm::snapshot {

void check_memory_file(const std::string& path, std::uint64_t expected_size) {
    // stat follows a symlink, as the later open+mmap will.
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        int err = errno;
        if (err == ENOENT) throw SnapshotError(SnapshotErrorKind::not_found, path, "no such file");
        throw io_error(path, "stat", err);
    }
    if (!S_ISREG(st.st_mode)) throw SnapshotError(SnapshotErrorKind::io, path, "not a regular file");
    auto size = static_cast<std::uint64_t>(st.st_size);
    if (size < expected_size) {
        throw SnapshotError(SnapshotErrorKind::truncated, path,
                            "memory file is " + std::to_string(size) + " bytes, expected " +
                                std::to_string(expected_size) + " (a clone would fault past EOF)");
    }
    if (size > expected_size) {
        throw SnapshotError(
            SnapshotErrorKind::corrupt, path,
            "memory file is " + std::to_string(size) + " bytes, expected " + std::to_string(expected_size));
    }
}

}  // namespace forkvm::snapshot
