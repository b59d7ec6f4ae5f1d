#pragma once
// Snapshot directories for machines: writing one from a paused Machine and
// loading one for Machine::restore. The container formats live in
// snapshot/ (docs/snapshot-format.md); this is where guest RAM and KVM state
// meet them.

#include <string>
#include <string_view>

#include "snapshot/manifest.hpp"
#include "snapshot/state_file.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/machine.hpp"

namespace forkvm::vmm {

// Writes memory.bin (sparse), state.bin and, last, manifest.json into `dir`
// (created if missing; an existing snapshot there is refused, so a live
// clone's backing file is never overwritten). The machine must be paused.
// Throws snapshot::SnapshotError (io, ...) or SysError; a failure leaves no
// manifest, so no reader takes the directory for a snapshot.
snapshot::Manifest write_snapshot(const Machine& machine, const std::string& dir,
                                  std::string_view product_version);

struct LoadedSnapshot {
    GuestMemory memory;         // memory.bin mapped MAP_PRIVATE: shared page cache, copy-on-write
    snapshot::StateFile state;  // parsed, checksum verified
};

// Checks the directory (manifest, sizes, state.bin checksum; not a hash of
// all memory: that would read every page) and maps memory.bin privately.
// Throws snapshot::SnapshotError with the kind of problem.
LoadedSnapshot load_snapshot(const std::string& dir);

// For snapshots from elsewhere (imports): the deep check (every byte of
// memory.bin against the manifest's SHA-256) and the host check a restore
// would make (CPUID and KVM capabilities, via /dev/kvm), without starting a
// VM. Throws snapshot::SnapshotError (incompatible, corrupt, ...) or SysError
// when /dev/kvm cannot be opened.
void check_snapshot_runs_here(const std::string& dir);

}  // namespace forkvm::vmm
