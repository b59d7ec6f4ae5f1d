#include "snapshot/file_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "snapshot/snapshot_error.hpp"
#include "vmm/unique_fd.hpp"

namespace forkvm::snapshot {
namespace {

void write_all(int fd, std::span<const std::uint8_t> bytes, const std::string& path) {
    std::size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::write(fd, bytes.data() + done, bytes.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw io_error(path, "write", errno);
        }
        done += static_cast<std::size_t>(n);
    }
}

// The rename is only durable once the directory entry is on disk too.
void fsync_dir(const std::string& dir, const std::string& path) {
    UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) throw io_error(path, "open directory " + dir, errno);
    if (::fsync(fd.get()) != 0) throw io_error(path, "fsync directory " + dir, errno);
}

}  // namespace

void write_file_atomic(const std::string& path, std::span<const std::uint8_t> bytes) {
    std::filesystem::path target(path);
    if (target.filename().empty()) {
        throw SnapshotError(SnapshotErrorKind::io, path, "not a file path");
    }
    std::string dir = target.has_parent_path() ? target.parent_path().string() : std::string(".");
    std::string tmp = (target.parent_path() / (target.filename().string() + ".tmp.XXXXXX")).string();

    UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
    if (!fd) throw io_error(path, "create temp file in " + dir, errno);
    try {
        write_all(fd.get(), bytes, path);
        if (::fsync(fd.get()) != 0) throw io_error(path, "fsync", errno);
        // close() can report a deferred write error (e.g. on NFS): check it.
        if (::close(fd.release()) != 0) throw io_error(path, "close", errno);
        if (::rename(tmp.c_str(), path.c_str()) != 0) throw io_error(path, "rename", errno);
    } catch (...) {
        ::unlink(tmp.c_str());
        throw;
    }
    fsync_dir(dir, path);
}

std::vector<std::uint8_t> read_file_capped(const std::string& path, std::size_t max_size) {
    // O_NONBLOCK: opening a FIFO must not hang the reader.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!fd) {
        int err = errno;
        if (err == ENOENT) throw SnapshotError(SnapshotErrorKind::not_found, path, "no such file");
        throw io_error(path, "open", err);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw io_error(path, "fstat", errno);
    if (!S_ISREG(st.st_mode)) throw SnapshotError(SnapshotErrorKind::io, path, "not a regular file");
    auto size = static_cast<std::uint64_t>(st.st_size);
    if (size > max_size) {
        throw SnapshotError(SnapshotErrorKind::too_large, path,
                            "file is " + std::to_string(size) + " bytes, larger than the cap of " +
                                std::to_string(max_size) + " bytes");
    }
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
    std::size_t done = 0;
    while (done < bytes.size()) {
        ssize_t n = ::read(fd.get(), bytes.data() + done, bytes.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw io_error(path, "read", errno);
        }
        if (n == 0) {
            throw SnapshotError(SnapshotErrorKind::truncated, path,
                                "file shrank while being read (" + std::to_string(done) + " of " +
                                    std::to_string(size) + " bytes)");
        }
        done += static_cast<std::size_t>(n);
    }
    return bytes;
}

}  // namespace forkvm::snapshot
