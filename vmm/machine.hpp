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
#include "vmm/devices/cmos_rtc.hpp"
#include "vmm/devices/i8042.hpp"
#include "vmm/devices/serial.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/kvm.hpp"
#include "vmm/linux_boot.hpp"
#include "vmm/unique_fd.hpp"
#include "vmm/vcpu_runner.hpp"
#include "vmm/vm_config.hpp"

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

    // Builds the VM and loads the kernel; the vCPUs do not run yet.
    // Throws SysError / BootError / std::invalid_argument (bad config).
    static std::unique_ptr<Machine> boot(const VmConfig& config);
    ~Machine();
    Machine(const Machine&) = delete;
    Machine& operator=(const Machine&) = delete;

    void start();
    void pause();  // all vCPUs paused at a clean point
    void resume();
    // Stops every vCPU (idempotent) and joins their threads.
    void stop(const std::string& reason);

    // Readable (eventfd) when the host side should look at the serial ports
    // or at stop_info(). Read it to clear.
    [[nodiscard]] int event_fd() const noexcept { return event_fd_.get(); }
    void clear_event() const;
    [[nodiscard]] std::optional<StopInfo> stop_info() const;
    [[nodiscard]] bool paused() const;

    [[nodiscard]] Serial& console() const noexcept { return *console_; }
    [[nodiscard]] Serial& agent() const noexcept { return *agent_; }
    [[nodiscard]] const GuestMemory& memory() const noexcept { return memory_; }
    [[nodiscard]] const BootInfo& boot_info() const noexcept { return boot_info_; }
    [[nodiscard]] std::uint64_t unhandled_io() const noexcept {
        return pio_.unhandled_accesses() + mmio_.unhandled_accesses();
    }

private:
    Machine(VmConfig config, Kvm kvm, Vm vm, GuestMemory memory);
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
    std::shared_ptr<Serial> agent_;
    std::shared_ptr<I8042> i8042_;
    std::shared_ptr<CmosRtc> rtc_;
    std::vector<std::unique_ptr<VcpuRunner>> vcpus_;
    BootInfo boot_info_{};

    mutable std::mutex mu_;
    std::optional<StopInfo> stop_info_;
    bool paused_ = false;
};

}  // namespace forkvm::vmm
