#include "vmm/snapshot_io.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "snapshot/snapshot_error.hpp"
#include "vmm/kvm.hpp"
#include "vmm/unique_fd.hpp"
#include "vmm/vm_state.hpp"

namespace forkvm::vmm {

using snapshot::SnapshotError;
using snapshot::SnapshotErrorKind;

snapshot::Manifest write_snapshot(const Machine& machine, const std::string& dir,
                                  std::string_view product_version) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw snapshot::io_error(dir, "mkdir", ec.value());
    const std::string manifest_path = dir + "/" + std::string(snapshot::kManifestFileName);
    if (::access(manifest_path.c_str(), F_OK) == 0) {
        throw SnapshotError(SnapshotErrorKind::io, dir, "already holds a snapshot (remove it first)");
    }
    // Gather the state first: a machine that cannot be saved writes nothing.
    snapshot::StateFile state;
    machine.save_state(state);

    const std::string memory_path = dir + "/" + std::string(snapshot::kMemoryFileName);
    // A fresh inode: clones of an older snapshot may still map the old file.
    ::unlink(memory_path.c_str());
    UniqueFd fd(::open(memory_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) throw snapshot::io_error(memory_path, "open", errno);
    try {
        machine.memory().write_image(fd.get(), memory_path);
    } catch (...) {
        ::unlink(memory_path.c_str());
        throw;
    }
    fd.reset();
    return snapshot::finalize_snapshot_dir(dir, state, product_version);
}

LoadedSnapshot load_snapshot(const std::string& dir) {
    snapshot::VerifiedSnapshot verified = snapshot::verify_snapshot_dir(dir, /*deep=*/false);
    const std::string memory_path = dir + "/" + std::string(snapshot::kMemoryFileName);
    UniqueFd fd(::open(memory_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw snapshot::io_error(memory_path, "open", errno);
    // Re-check through the fd we map: the file may have changed since the
    // directory was verified, and a mapping past EOF would SIGBUS the VM.
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw snapshot::io_error(memory_path, "fstat", errno);
    if (static_cast<std::uint64_t>(st.st_size) != verified.manifest.memory_size) {
        throw SnapshotError(SnapshotErrorKind::truncated, memory_path, "size changed since it was verified");
    }
    // The mapping keeps the file referenced; the fd is not needed after it.
    return LoadedSnapshot{GuestMemory::map_file(fd.get(), verified.manifest.memory_size),
                          std::move(verified.state)};
}

void check_snapshot_runs_here(const std::string& dir) {
    const snapshot::VerifiedSnapshot verified = snapshot::verify_snapshot_dir(dir, /*deep=*/true);
    check_host_identity(Kvm::open(), verified.state);
}

}  // namespace forkvm::vmm
