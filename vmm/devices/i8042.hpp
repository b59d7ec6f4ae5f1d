#pragma once
// Just enough of an i8042 keyboard controller (ports 0x60 data, 0x64
// status/command) for Linux to probe it and for `reboot=k` to stop the VM:
// the CPU-reset command 0xFE calls `on_reset`, which forkvm treats as the
// guest shutting down.

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

#include "vmm/bus.hpp"

namespace forkvm::vmm {

class I8042 final : public BusDevice {
public:
    static constexpr std::uint64_t kDataPort = 0x60;
    static constexpr std::uint64_t kCommandPort = 0x64;

    explicit I8042(std::function<void()> on_reset) : on_reset_(std::move(on_reset)) {}

    // Registered for ports 0x60..0x64; offsets are relative to 0x60.
    void read(std::uint64_t offset, std::span<std::uint8_t> data) override;
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

    [[nodiscard]] bool reset_requested() const;

    // At most this many bytes wait at 0x60 (older ones are dropped).
    static constexpr std::size_t kOutputLimit = 16;

    // Snapshot support: the control byte, a command awaiting its data byte,
    // the bytes waiting at 0x60 and whether a reset was requested.
    // load_state throws DeviceStateError on a bad blob (leaving the device
    // as it was); it restores the reset flag without calling on_reset, as
    // the reset already happened in the VM that was saved.
    static constexpr std::uint8_t kStateVersion = 1;
    [[nodiscard]] std::vector<std::uint8_t> save_state() const;
    void load_state(std::span<const std::uint8_t> blob);

private:
    mutable std::mutex mu_;
    std::function<void()> on_reset_;
    std::deque<std::uint8_t> out_;        // bytes for the guest to read at 0x60
    std::uint8_t control_ = 0x01 | 0x40;  // keyboard interrupt, translation
    std::uint8_t pending_command_ = 0;    // command waiting for a data byte
    bool reset_ = false;
};

}  // namespace forkvm::vmm
