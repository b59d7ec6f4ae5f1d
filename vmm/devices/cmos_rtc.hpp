#pragma once
// A CMOS real-time clock (MC146818, ports 0x70 index / 0x71 data) that reads
// the host's wall clock. Linux reads it once at boot for the initial time;
// without one it spins on the update-in-progress bit thousands of times
// (each read a VM exit) and starts at 1970. Writes are accepted and ignored:
// the guest cannot move the host's clock, and forkvm sets guest time itself.

#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include "vmm/bus.hpp"

namespace forkvm::vmm {

class CmosRtc final : public BusDevice {
public:
    static constexpr std::uint64_t kIndexPort = 0x70;

    void read(std::uint64_t offset, std::span<std::uint8_t> data) override;
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

    // The register value the guest would read, for a given UTC time (tests).
    static std::uint8_t register_at(std::uint8_t index, std::int64_t unix_seconds);

    // Snapshot support: only the selected register index is state; the
    // clock registers always read the host's time. load_state throws
    // DeviceStateError on a bad blob (leaving the device as it was).
    static constexpr std::uint8_t kStateVersion = 1;
    [[nodiscard]] std::vector<std::uint8_t> save_state() const;
    void load_state(std::span<const std::uint8_t> blob);

private:
    mutable std::mutex mu_;
    std::uint8_t index_ = 0;
};

}  // namespace forkvm::vmm
