#pragma once
// PCI bus 0 behind a host bridge, as the stock Linux kernel finds it with
// `pci=conf1` and no ACPI: configuration mechanism #1 on ports 0xCF8 (address)
// and 0xCFC-0xCFF (data), a host bridge at 00:00.0, functions at 00:NN.0, and
// one MMIO window in the 32-bit hole where their BARs live. Interrupts are
// legacy INTx on fixed PIC inputs, named in each function's interrupt line
// register, which Linux uses as is when it finds no IRQ routing table.
//
// Functions see config-space and BAR accesses only; they never see the VM.

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "vmm/bus.hpp"
#include "vmm/pci/pci_config.hpp"

namespace forkvm::vmm {

class PciFunction {
public:
    virtual ~PciFunction() = default;
    // Config space: offset + data.size() <= 256.
    virtual void config_read(std::size_t offset, std::span<std::uint8_t> data) = 0;
    virtual void config_write(std::size_t offset, std::span<const std::uint8_t> data) = 0;
    // Where BAR0 decodes now, if it does: {guest address, size}.
    struct Window {
        std::uint64_t base = 0;
        std::uint64_t size = 0;
    };
    [[nodiscard]] virtual Window bar0_window() const = 0;
    // BAR0 accesses; offset + data.size() <= the window's size.
    virtual void bar0_read(std::uint64_t offset, std::span<std::uint8_t> data) = 0;
    virtual void bar0_write(std::uint64_t offset, std::span<const std::uint8_t> data) = 0;
};

class PciRoot {
public:
    static constexpr std::uint16_t kConfigPorts = 0xcf8;  // 0xCF8 address, 0xCFC data
    static constexpr std::uint64_t kConfigPortCount = 8;
    static constexpr std::uint64_t kMmioBase = 0xd0000000;  // in the hole below 4 GiB
    static constexpr std::uint64_t kMmioSize = 0x10000000;
    static constexpr std::uint8_t kMaxSlots = 32;

    PciRoot();

    // Plugs `function` in as 00:slot.0 (1 <= slot < 32, free).
    void add(std::uint8_t slot, std::shared_ptr<PciFunction> function);

    // The two bus devices: register them on the port-I/O bus at kConfigPorts
    // and on the MMIO bus at kMmioBase.
    [[nodiscard]] std::shared_ptr<BusDevice> config_ports() const { return ports_; }
    [[nodiscard]] std::shared_ptr<BusDevice> mmio_window() const { return window_; }

    // Snapshot: the address register and the host bridge's config space.
    // Functions save their own state. load_state throws DeviceStateError.
    static constexpr std::uint8_t kStateVersion = 1;
    [[nodiscard]] std::vector<std::uint8_t> save_state() const;
    void load_state(std::span<const std::uint8_t> blob);

private:
    class ConfigPorts;
    class MmioWindow;
    class HostBridge;

    void config_access(std::uint64_t port_offset, std::span<std::uint8_t> read_into,
                       std::span<const std::uint8_t> write_from);
    PciFunction* selected(std::size_t& config_offset) const;  // with mu_ held

    mutable std::mutex mu_;
    std::uint32_t address_ = 0;
    std::shared_ptr<HostBridge> bridge_;
    std::array<std::shared_ptr<PciFunction>, kMaxSlots> slots_{};
    std::shared_ptr<BusDevice> ports_;
    std::shared_ptr<BusDevice> window_;
};

}  // namespace forkvm::vmm
