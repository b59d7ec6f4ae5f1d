#pragma once
// Machine: one running VM inside a VM process: KVM VM, guest memory, the in-kernel
// irqchip and PIT, devices on the port-I/O and MMIO buses, and one
// VcpuRunner per vCPU. Host-side code learns that something happened (console
// or agent bytes to move, the VM stopped) through one eventfd.

#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "vmm/bus.hpp"
#include "vmm/devices/agent_port.hpp"
#include "vmm/devices/cmos_rtc.hpp"
#include "vmm/devices/i8042.hpp"
#include "vmm/devices/serial.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/kvm.hpp"
#include "vmm/linux_boot.hpp"
#include "vmm/pci/pci_root.hpp"
#include "vmm/unique_fd.hpp"
#include "vmm/vcpu_runner.hpp"
#include "vmm/virtio/virtio_console.hpp"
#include "vmm/vm_config.hpp"

namespace forkvm::snapshot {
class StateFile;
}

namespace forkvm::vmm {

struct StopInfo {
    std::string reason;
    bool clean = false;  // the guest shut itself down (or the host stopped it)
};

class Machine {
public:
    static constexpr std::uint16_t kConsolePort = 0x3f8;  // COM1, IRQ 4
    static constexpr std::uint32_t kConsoleIrq = 4;
    static constexpr std::uint16_t kAgentPort = 0x2f8;  // COM2, IRQ 3
    static constexpr std::uint32_t kAgentIrq = 3;
    // The virtio console (agent channel by default): 00:01.0 on the PCI bus,
    // BAR0 at the start of the PCI MMIO window, INTA# on PIC input 5.
    static constexpr std::uint8_t kVirtioConsoleSlot = 1;
    static constexpr std::uint32_t kVirtioConsoleIrq = 5;
    static constexpr std::uint64_t kVirtioConsoleBar = PciRoot::kMmioBase;

    // Builds the VM and loads the kernel; the vCPUs do not run yet.
    // Throws SysError / BootError / std::invalid_argument (bad config).
    static std::unique_ptr<Machine> boot(const VmConfig& config);

    // Builds a VM from saved state over `memory` (a snapshot's memory.bin
    // mapped privately, or the memory a fork() inherited), in the documented
    // order (vmm/vm_state.hpp). The vCPUs start paused, with no thread (a
    // zygote stays single-threaded): resume() makes the threads and runs them. Throws snapshot::SnapshotError
    // (corrupt, missing_section, incompatible: what differs from this host), SysError.
    // `kvm`: the /dev/kvm handle to build the VM with (a fork child's, from
    // release_in_fork_child: a jailed process cannot open /dev/kvm); opened
    // anew when absent.
    static std::unique_ptr<Machine> restore(GuestMemory memory, const snapshot::StateFile& state,
                                            std::optional<Kvm> kvm = std::nullopt);

    // Everything but guest RAM: the VM config, this host's CPUID and KVM
    // capabilities, the VM's and every vCPU's KVM state, every device.
    // Only while paused() (throws std::logic_error otherwise).
    void save_state(snapshot::StateFile& state) const;

    // From paused(): ends every vCPU thread, keeping the vCPUs paused, so the
    // process is single-threaded and may fork(). resume() brings them back.
    void park();

    // In the child of a fork(): this Machine's KVM fds belong to the parent
    // (KVM binds a VM to the mm that created it; the child's copies answer
    // EIO) and its eventfd is shared with the parent. Closes them without a
    // single ioctl or eventfd write and returns the guest memory, which the
    // fork shares copy-on-write with the parent, and the /dev/kvm handle
    // (not bound to any mm: the child builds its own VM with it).
    struct ForkInheritance {
        GuestMemory memory;
        Kvm kvm;
    };
    static ForkInheritance release_in_fork_child(std::unique_ptr<Machine> machine);
    ~Machine();
    Machine(const Machine&) = delete;
    Machine& operator=(const Machine&) = delete;

    void start();
    void pause();   // all vCPUs paused at a clean point
    void resume();  // also starts the threads of restored or parked vCPUs
    // Stops every vCPU (idempotent) and joins their threads.
    void stop(const std::string& reason);

    // Readable (eventfd) when the host side should look at the serial ports
    // or at stop_info(). Read it to clear.
    [[nodiscard]] int event_fd() const noexcept { return event_fd_.get(); }
    void clear_event() const;
    [[nodiscard]] std::optional<StopInfo> stop_info() const;
    [[nodiscard]] bool paused() const;

    [[nodiscard]] Serial& console() const noexcept { return *console_; }
    // The agent channel's device: the virtio console or the COM2 UART
    // (config().agent_channel).
    [[nodiscard]] AgentPort& agent() const noexcept { return *agent_port_; }
    [[nodiscard]] const GuestMemory& memory() const noexcept { return memory_; }
    [[nodiscard]] const VmConfig& config() const noexcept { return config_; }
    [[nodiscard]] const BootInfo& boot_info() const noexcept { return boot_info_; }
    struct ExitCounts {
        std::uint64_t io = 0;    // KVM_EXIT_IO
        std::uint64_t mmio = 0;  // KVM_EXIT_MMIO
    };
    // Device exits of every vCPU since this Machine was built (a restored or
    // forked machine starts at zero).
    [[nodiscard]] ExitCounts device_exits() const;
    [[nodiscard]] std::uint64_t unhandled_io() const noexcept {
        return pio_.unhandled_accesses() + mmio_.unhandled_accesses();
    }

private:
    Machine(VmConfig config, Kvm kvm, Vm vm, GuestMemory memory);
    // The VM, its memory slots, the eventfd and the devices: what a booted
    // and a restored machine share. No vCPU yet.
    static std::unique_ptr<Machine> create(const VmConfig& config, GuestMemory memory,
                                           std::optional<Kvm> kvm = std::nullopt);
    void add_vcpu(Vcpu vcpu, bool start_paused);
    void notify() const;
    void on_vcpu_stop(const std::string& reason, bool clean);

    VmConfig config_;
    Kvm kvm_;
    Vm vm_;
    GuestMemory memory_;
    Bus pio_{"pio"};
    Bus mmio_{"mmio"};
    UniqueFd event_fd_;
    std::shared_ptr<Serial> console_;
    std::shared_ptr<Serial> agent_;  // COM2: present either way, the agent's only when agent_channel is uart
    std::unique_ptr<PciRoot> pci_;   // with agent_channel virtio
    std::shared_ptr<VirtioConsole> virtio_console_;
    AgentPort* agent_port_ = nullptr;
    std::shared_ptr<I8042> i8042_;
    std::shared_ptr<CmosRtc> rtc_;
    std::vector<std::unique_ptr<VcpuRunner>> vcpus_;
    std::vector<std::uint32_t> msr_indices_;  // what save_state saves per vCPU
    BootInfo boot_info_{};

    mutable std::mutex mu_;
    std::optional<StopInfo> stop_info_;
    bool paused_ = false;
};

}  // namespace forkvm::vmm
