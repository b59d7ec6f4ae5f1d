#pragma once
// The golden snapshot every warm VM descends from: a VM booted once until
// its agent is ready, then written to disk (docs/snapshot-format.md).
//
// It is cached under <cache_root>/golden-<key>/, where the key hashes all
// that makes the snapshot what it is: the kernel's and initramfs's bytes,
// the kernel command line, memory size, vCPU count, the snapshot format and
// forkvm's version. CPUID and KVM capabilities are not in the key: a
// restore compares them exactly (vmm/vm_state.hpp check_host_identity) and
// refuses a snapshot made elsewhere; open_golden_source() then boots anew.

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "pool/vm_process_source.hpp"
#include "vmm/vm_config.hpp"

namespace forkvm::pool {

// Progress lines for the startup log ("golden VM booting", ...).
using ProgressLog = std::function<void(const std::string& line)>;

struct GoldenSettings {
    vmm::VmConfig vm;
    std::string cache_root;          // created if missing
    std::string product_version;     // part of the key
    VmProcessSourceSettings source;  // snapshot_dir is filled in here
    std::chrono::milliseconds boot_timeout{std::chrono::minutes(5)};
};

// Hex SHA-256 over the inputs listed above. Throws std::runtime_error if the
// kernel or initramfs cannot be read.
[[nodiscard]] std::string golden_key(const vmm::VmConfig& vm, std::string_view product_version);

struct GoldenSource {
    std::unique_ptr<VmProcessSource> source;
    std::string snapshot_dir;
    bool reused = false;  // a cached snapshot was restored; no golden VM booted
};

// Restores the zygote from the cached golden snapshot, or (none cached, or
// the cached one refused) boots the golden VM, writes the snapshot into the
// cache and restores from that. Throws on failure.
GoldenSource open_golden_source(const GoldenSettings& settings, const ProgressLog& log);

}  // namespace forkvm::pool
