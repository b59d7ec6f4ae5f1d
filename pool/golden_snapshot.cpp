#include "pool/golden_snapshot.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <system_error>
#include <utility>

#include "snapshot/manifest.hpp"
#include "snapshot/sha256.hpp"
#include "snapshot/state_file.hpp"
#include "vmm/agent_client.hpp"
#include "vmm/vm_process.hpp"

namespace forkvm::pool {
namespace fs = std::filesystem;
namespace {

bool has_manifest(const fs::path& dir) {
    std::error_code ec;
    return fs::is_regular_file(dir / snapshot::kManifestFileName, ec);
}

void remove_quietly(const fs::path& path) {
    std::error_code ec;
    fs::remove_all(path, ec);
}

// "12.3 s" since `start`.
std::string seconds_since(std::chrono::steady_clock::time_point start) {
    char text[32];
    std::snprintf(text, sizeof text, "%.1f s",
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    return text;
}

// Boots the golden VM, waits for its agent, writes the snapshot into a
// temporary folder next to `dir` and renames it into place, so a crash
// midway never leaves a half-written snapshot under the final name.
void boot_and_snapshot(const GoldenSettings& settings, const fs::path& dir, const ProgressLog& log) {
    const auto start = std::chrono::steady_clock::now();
    log("golden VM booting (kernel " + settings.vm.kernel_path + ", " +
        std::to_string(settings.vm.memory_mb) + " MiB)");
    vmm::SpawnOptions spawn = settings.source.spawn;
    spawn.boot_timeout = settings.boot_timeout;
    auto vm = vmm::VmProcess::spawn(settings.vm, spawn);
    vmm::AgentClient agent(vm->take_agent_fd());
    agent.wait_ready(settings.boot_timeout);
    log("golden VM ready after " + seconds_since(start) + "; writing its snapshot");

    const fs::path tmp = dir.string() + ".tmp-" + std::to_string(::getpid());
    remove_quietly(tmp);
    try {
        // The agent channel is idle: the snapshot catches the agent waiting
        // for its next request, as every clone will find it.
        vm->snapshot(tmp.string());
        agent.close();
        vm->stop(std::chrono::seconds(5));
        remove_quietly(dir);
        fs::rename(tmp, dir);
    } catch (...) {
        remove_quietly(tmp);
        throw;
    }
    log("golden snapshot written to " + dir.string() + " (" + seconds_since(start) + " in all)");
}

// Temporary folders of servers that died while writing a snapshot.
void remove_stale_temporaries(const fs::path& root) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(root, ec)) {
        const std::string name = entry.path().filename().string();
        const auto at = name.rfind(".tmp-");
        if (at == std::string::npos) continue;
        const std::string pid_text = name.substr(at + 5);
        pid_t pid = 0;
        const auto parsed = std::from_chars(pid_text.data(), pid_text.data() + pid_text.size(), pid);
        if (parsed.ec != std::errc() || parsed.ptr != pid_text.data() + pid_text.size() || pid <= 0) continue;
        if (pid != ::getpid() && ::kill(pid, 0) != 0 && errno == ESRCH) remove_quietly(entry.path());
    }
}

}  // namespace

std::string golden_key(const vmm::VmConfig& vm, std::string_view product_version) {
    std::string material = "forkvm-golden/1\n";
    material += "format " + std::to_string(snapshot::kFormatVersion) + "\n";
    material += "version " + std::string(product_version) + "\n";
    material += "kernel " + snapshot::to_hex(snapshot::sha256_file(vm.kernel_path)) + "\n";
    material += "initrd " + snapshot::to_hex(snapshot::sha256_file(vm.initrd_path)) + "\n";
    material += "cmdline " + vmm::kernel_command_line(vm) + "\n";
    material += "memory_mb " + std::to_string(vm.memory_mb) + "\n";
    material += "vcpus " + std::to_string(vm.vcpu_count) + "\n";
    const auto* bytes = reinterpret_cast<const std::uint8_t*>(material.data());
    return snapshot::to_hex(snapshot::sha256({bytes, material.size()}));
}

GoldenSource open_golden_source(const GoldenSettings& settings, const ProgressLog& log) {
    fs::create_directories(settings.cache_root);
    remove_stale_temporaries(settings.cache_root);
    const std::string key = golden_key(settings.vm, settings.product_version);
    const fs::path dir = fs::path(settings.cache_root) / ("golden-" + key.substr(0, 16));

    VmProcessSourceSettings source_settings = settings.source;
    source_settings.snapshot_dir = dir.string();
    GoldenSource result;
    result.snapshot_dir = dir.string();

    if (has_manifest(dir)) {
        try {
            result.source = std::make_unique<VmProcessSource>(source_settings);
            result.reused = true;
            log("cached golden snapshot reused: " + dir.string() + " (no golden VM boot)");
            return result;
        } catch (const vmm::VmProcessError& e) {
            if (e.snapshot_error().empty()) throw;  // the VM process failed, not the snapshot
            log("cached golden snapshot " + dir.string() + " refused (" + e.snapshot_error() + ": " +
                e.what() + "); booting a new one");
            remove_quietly(dir);
        }
    }
    boot_and_snapshot(settings, dir, log);
    result.source = std::make_unique<VmProcessSource>(source_settings);
    return result;
}

}  // namespace forkvm::pool
