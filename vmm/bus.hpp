#pragma once
// One bus for port I/O and one for MMIO: devices registered at address
// ranges, each seeing accesses as (offset, bytes). A guest access that no
// device owns is counted and logged at debug level, never fatal.

#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace forkvm::vmm {

// The device contract: `offset` is relative to the device's base; `data` is
// 1, 2, 4 or 8 bytes. Devices are called from vCPU threads and must do
// their own locking; they never see the VM object.
class BusDevice {
public:
    virtual ~BusDevice() = default;
    virtual void read(std::uint64_t offset, std::span<std::uint8_t> data) = 0;
    virtual void write(std::uint64_t offset, std::span<const std::uint8_t> data) = 0;
};

class Bus {
public:
    explicit Bus(std::string name) : name_(std::move(name)) {}

    // Registers [base, base+length). Throws std::invalid_argument on overlap.
    void insert(std::uint64_t base, std::uint64_t length, std::shared_ptr<BusDevice> device,
                std::string name);

    // False when no device owns `addr` (reads then return all ones).
    bool read(std::uint64_t addr, std::span<std::uint8_t> data) const;
    bool write(std::uint64_t addr, std::span<const std::uint8_t> data) const;

    [[nodiscard]] std::uint64_t unhandled_accesses() const noexcept { return unhandled_.load(); }

private:
    struct Range {
        std::uint64_t base;
        std::uint64_t length;
        std::shared_ptr<BusDevice> device;
        std::string name;
    };
    [[nodiscard]] const Range* find(std::uint64_t addr) const noexcept;
    void count_unhandled(const char* kind, std::uint64_t addr, std::size_t size) const;

    std::string name_;
    std::vector<Range> ranges_;  // sorted by base; fixed after set-up
    mutable std::atomic<std::uint64_t> unhandled_{0};
};

}  // namespace forkvm::vmm
