#pragma once
// The virtio 1.x PCI transport ("modern" only, virtio spec §4.1) for one
// device: the vendor capabilities Linux's virtio_pci looks for, and one
// 16 KiB memory BAR holding the common configuration, the ISR byte, the
// device configuration and the queue notification doorbells. Interrupts are
// legacy INTx (no MSI-X capability, so Linux falls back to it): the line is
// high while the ISR byte is non-zero, and the driver's read of the ISR byte
// clears it and lowers the line.
//
// Device types derive from this class and implement the hooks, all called
// with the device lock held. A malformed queue (VirtqueueError) or any other
// driver error marks the device broken: DEVICE_NEEDS_RESET is set, every
// queue stops, and `on_broken(reason)` is called once (the VM stops).
//
// Offered features: VERSION_1 plus the device type's own. Not offered:
// MSI-X, event index, indirect descriptors, packed rings.

#include <cstdint>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/devices/device_state.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/pci/pci_root.hpp"
#include "vmm/virtio/virtqueue.hpp"

namespace forkvm::vmm {

struct VirtioPciCallbacks {
    std::function<void(bool)> set_irq;                  // drives the INTx line (a PIC input)
    std::function<void(const std::string&)> on_broken;  // once, on the first driver error
};

class VirtioPciDevice : public PciFunction {
public:
    static constexpr std::uint32_t kBarSize = 0x4000;
    // BAR0 layout.
    static constexpr std::uint64_t kCommonOffset = 0x0000, kCommonSize = 0x40;
    static constexpr std::uint64_t kIsrOffset = 0x1000, kIsrSize = 0x4;
    static constexpr std::uint64_t kDeviceOffset = 0x2000, kDeviceSize = 0x1000;
    static constexpr std::uint64_t kNotifyOffset = 0x3000, kNotifyMultiplier = 4;

    // Device status bits (§2.1).
    static constexpr std::uint8_t kAcknowledge = 1, kDriver = 2, kDriverOk = 4, kFeaturesOk = 8,
                                  kNeedsReset = 0x40, kFailed = 0x80;
    static constexpr std::uint64_t kFeatureVersion1 = 1ULL << 32;

    // `device_type`: the virtio device ID (3 = console, 4 = entropy).
    VirtioPciDevice(const GuestMemory& memory, std::uint16_t device_type, std::uint32_t pci_class,
                    std::uint32_t bar0_address, std::uint8_t irq, std::uint16_t queue_count,
                    std::uint16_t queue_size, VirtioPciCallbacks callbacks);
    ~VirtioPciDevice() override = default;

    void config_read(std::size_t offset, std::span<std::uint8_t> data) override;
    void config_write(std::size_t offset, std::span<const std::uint8_t> data) override;
    [[nodiscard]] Window bar0_window() const override;
    void bar0_read(std::uint64_t offset, std::span<std::uint8_t> data) override;
    void bar0_write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

    [[nodiscard]] bool driver_ok() const;
    [[nodiscard]] std::optional<std::string> broken_reason() const;

    // Lost-interrupt watchdog (see Serial::retrigger_stalled_irq): when the
    // line has been high since the previous call and the guest has not read
    // the ISR byte in between (its interrupt handler would have), lower and
    // raise it again. Other accesses do not count: a guest still notifying
    // its transmit queue may have lost the edge all the same.
    bool retrigger_stalled_irq();
    [[nodiscard]] std::uint64_t irq_retriggers() const;
    // Status, ISR, line, and per queue: enabled, the driver's avail index and
    // flags, the device's next avail and used index.
    [[nodiscard]] std::string describe_transport() const;

    // Snapshot: PCI config space, transport registers, every queue, then the
    // device type's own state. load_state treats the blob as untrusted,
    // throws DeviceStateError and leaves the device as it was on failure;
    // on success it re-drives the IRQ line, and a device saved broken
    // reports itself broken (on_broken) again.
    static constexpr std::uint8_t kStateVersion = 1;
    [[nodiscard]] std::vector<std::uint8_t> save_state() const;
    void load_state(std::span<const std::uint8_t> blob);

protected:
    // Hooks, called with mu_ held. May throw VirtqueueError.
    [[nodiscard]] virtual std::uint64_t device_features() const { return 0; }
    virtual void read_device_config(std::uint64_t offset, std::span<std::uint8_t> data) const;
    virtual void on_queue_notify(std::uint16_t queue) = 0;
    virtual void on_reset() {}
    virtual void save_device(ByteWriter& w) const = 0;
    // Reads into temporaries and commits only when the whole blob is good.
    virtual void load_device(ByteReader& r) = 0;

    // For the device types (mu_ held): a queue, if the driver has enabled it
    // and finished set-up (DRIVER_OK) and the device is not broken.
    Virtqueue* live_queue(std::uint16_t index);
    [[nodiscard]] const Virtqueue* live_queue(std::uint16_t index) const;
    // After used buffers were pushed on `queue`: interrupt unless the driver
    // asked not to be.
    void signal_used(Virtqueue& queue);
    // Marks the device broken (see above).
    void fail(const std::string& reason);
    // Runs `body` and turns a VirtqueueError into fail().
    template <typename Body>
    void guarded(Body&& body) {
        try {
            body();
        } catch (const VirtqueueError& e) {
            fail(e.what());
        }
    }

    mutable std::mutex mu_;

private:
    void reset();  // mu_ held
    void update_irq();
    void common_read(std::uint64_t offset, std::span<std::uint8_t> data);
    void common_write(std::uint64_t offset, std::uint64_t value, std::size_t size);
    void set_status(std::uint8_t status);
    [[nodiscard]] std::uint64_t offered_features() const { return kFeatureVersion1 | device_features(); }

    const GuestMemory& memory_;
    const std::uint16_t device_type_;
    PciConfigSpace config_;
    VirtioPciCallbacks callbacks_;
    std::vector<Virtqueue> queues_;

    std::uint32_t device_feature_select_ = 0;
    std::uint32_t driver_feature_select_ = 0;
    std::uint64_t driver_features_ = 0;
    std::uint8_t status_ = 0;
    std::uint16_t queue_select_ = 0;
    std::uint8_t isr_ = 0;
    bool irq_level_ = false;
    std::optional<std::string> broken_;

    std::uint64_t isr_reads_ = 0;
    std::uint64_t isr_reads_at_last_check_ = 0;
    std::uint64_t irq_retriggers_ = 0;
};

}  // namespace forkvm::vmm
