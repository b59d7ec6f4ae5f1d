#pragma once
// Section tags reserved in state.bin (docs/snapshot-format.md lists what goes
// in each). The VM code fills them; keeping the names here keeps writer and
// reader from drifting apart.

#include <array>
#include <string>
#include <string_view>

namespace forkvm::snapshot::tags {

// --- Per VM.
inline constexpr std::string_view kVmConfig = "vm.config";  // memory size, vCPU count, boot config
inline constexpr std::string_view kHostCpuid = "cpuid";     // KVM_GET_SUPPORTED_CPUID of the host
inline constexpr std::string_view kKvmCaps = "kvm.caps";    // host KVM capabilities (KVM_CHECK_EXTENSION)
inline constexpr std::string_view kPicMaster = "vm.pic_master";  // KVM_GET_IRQCHIP, KVM_IRQCHIP_PIC_MASTER
inline constexpr std::string_view kPicSlave = "vm.pic_slave";    // KVM_GET_IRQCHIP, KVM_IRQCHIP_PIC_SLAVE
inline constexpr std::string_view kIoapic = "vm.ioapic";         // KVM_GET_IRQCHIP, KVM_IRQCHIP_IOAPIC
inline constexpr std::string_view kPit2 = "vm.pit2";             // KVM_GET_PIT2
inline constexpr std::string_view kClock = "vm.clock";           // KVM_GET_CLOCK (kvmclock)

// --- Devices.
// Each a device's save_state() blob (vmm/devices/*: a version byte, then
// its registers and queued bytes).
inline constexpr std::string_view kUart0 = "dev.uart0";  // console UART: registers, FIFOs, IRQ level
// COM2: the agent channel when vm.config says agent_channel "uart" (present
// either way). A snapshot is taken with the agent channel idle (no
// frame half-sent by the host's client), and the UART's FIFOs are saved exactly.
inline constexpr std::string_view kUart1 = "dev.uart1";
inline constexpr std::string_view kI8042 = "dev.i8042";
inline constexpr std::string_view kRtc = "dev.rtc";
// With the virtio console as the agent channel (vm.config agent_channel
// "virtio"): the PCI root (address register, host bridge config space) and
// the console (PCI config space, transport registers, both queues' addresses
// and positions, the ISR, and the bytes buffered either way; the rings
// themselves are in guest memory).
inline constexpr std::string_view kPci = "dev.pci";
inline constexpr std::string_view kVirtioConsole = "dev.virtio_console";

// --- Per vCPU: "vcpu.<index>.<name>", names listed in restore order
// (Firecracker's order; MSRs carry TSC before TSC_DEADLINE).
inline constexpr std::array<std::string_view, 11> kVcpuRestoreOrder = {
    "cpuid", "mp_state", "regs", "sregs", "xsave", "xcrs", "debugregs", "lapic", "msrs", "events", "tsc_khz",
};

// vcpu_tag(0, "regs") == "vcpu.0.regs".
[[nodiscard]] inline std::string vcpu_tag(unsigned index, std::string_view name) {
    std::string tag = "vcpu." + std::to_string(index) + ".";
    tag += name;
    return tag;
}

}  // namespace forkvm::snapshot::tags
