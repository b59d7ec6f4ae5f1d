#include "vmm/vm_config.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

namespace forkvm::vmm {

// console=ttyS0        kernel console on COM1 (the agent channel is COM2)
// 8250.nr_uarts=2      probe only the two UARTs that exist
// noapic acpi=off      no IOAPIC/ACPI tables: IRQs through the in-kernel PIC
// pci=...              per agent channel (kernel_command_line): conf1 for the
//                      virtio console's PCI bus, off for the UART fallback
// reboot=k panic=1     reboot and panic through the i8042 reset, which ends
//                      the VM; a panic ends it after 1 s instead of hanging
// i8042.*              a minimal i8042: no probing of aux/kbd hardware
// tsc=reliable         skip TSC stability checks (clocksource watchdog)
// quiet loglevel=4     fewer console bytes: each one is a VM exit
// rdinit=/init         run the initramfs's /init directly
const char* const kDefaultKernelArgs =
    "console=ttyS0 8250.nr_uarts=2 noapic acpi=off reboot=k panic=1 "
    "i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 "
    "tsc=reliable quiet loglevel=4 rdinit=/init";

std::string ConfigProblem::to_string() const { return fmt::format("{} = '{}': {}", field, value, problem); }

namespace {

void check_file(std::vector<ConfigProblem>& out, const char* field, const std::string& path) {
    if (path.empty()) {
        out.push_back({field, path, "must not be empty"});
        return;
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        out.push_back({field, path, "no such file"});
    } else if (!S_ISREG(st.st_mode)) {
        out.push_back({field, path, "not a regular file"});
    } else if (::access(path.c_str(), R_OK) != 0) {
        out.push_back({field, path, "not readable"});
    }
}

std::uint64_t host_memory_mb() {
    long pages = ::sysconf(_SC_PHYS_PAGES);
    long page_size = ::sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page_size <= 0) return 0;
    return static_cast<std::uint64_t>(pages) * static_cast<std::uint64_t>(page_size) / (1024 * 1024);
}

}  // namespace

std::vector<ConfigProblem> validate(const VmConfig& config) {
    std::vector<ConfigProblem> out;
    if (config.vcpu_count == 0) {
        out.push_back({"vcpu_count", "0", "must be at least 1"});
    } else if (config.vcpu_count > VmConfig::kMaxVcpus) {
        out.push_back({"vcpu_count", std::to_string(config.vcpu_count),
                       fmt::format("at most {} is supported", VmConfig::kMaxVcpus)});
    }
    const std::string mem = std::to_string(config.memory_mb);
    if (config.memory_mb < VmConfig::kMinMemoryMb) {
        out.push_back({"memory_mb", mem, fmt::format("must be at least {}", VmConfig::kMinMemoryMb)});
    } else if (config.memory_mb > VmConfig::kMaxMemoryMb) {
        out.push_back({"memory_mb", mem, fmt::format("must be at most {}", VmConfig::kMaxMemoryMb)});
    } else if (std::uint64_t host = host_memory_mb(); host != 0 && config.memory_mb > host) {
        out.push_back({"memory_mb", mem, fmt::format("exceeds this host's memory ({} MiB)", host)});
    }
    check_file(out, "kernel", config.kernel_path);
    check_file(out, "initrd", config.initrd_path);
    if (config.kernel_args.find('\0') != std::string::npos) {
        out.push_back({"kernel_args", "...", "must not contain NUL bytes"});
    }
    return out;
}

std::string_view to_string(AgentChannel channel) {
    return channel == AgentChannel::virtio ? "virtio" : "uart";
}

std::optional<AgentChannel> agent_channel_from_string(std::string_view name) {
    if (name == "virtio") return AgentChannel::virtio;
    if (name == "uart") return AgentChannel::uart;
    return std::nullopt;
}

std::string kernel_command_line(const VmConfig& config) {
    std::string line = kDefaultKernelArgs;
    // pci=conf1: PCI through ports 0xCF8/0xCFC, the only way this VMM offers
    // (no ACPI, no MMCONFIG). forkvm.agent tells /init which device the
    // agent talks on (guest/initramfs/init).
    line += config.agent_channel == AgentChannel::virtio ? " pci=conf1 forkvm.agent=virtio"
                                                         : " pci=off forkvm.agent=uart";
    if (!config.kernel_args.empty()) {
        line += ' ';
        line += config.kernel_args;
    }
    return line;
}

}  // namespace forkvm::vmm
