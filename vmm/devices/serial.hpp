#pragma once
// A 16550A UART on the port-I/O bus.
//
// Guest side: the registers the Linux 8250 driver uses, with FIFOs and
// interrupts (IRQ level driven through a callback, so the in-kernel PIC sees
// edges). Host side: bytes for the guest queue in an input buffer that the
// host only fills while it has room (push_input returns what it took), so no
// byte is ever dropped before the guest reads it; bytes from the guest queue
// in an output buffer the host drains with pop_output. While that buffer is
// full, LSR reports the transmitter busy, so a guest that honours THRE (as
// Linux does) waits instead of losing bytes.

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "vmm/bus.hpp"
#include "vmm/devices/agent_port.hpp"

namespace forkvm::vmm {

class Serial final : public BusDevice, public AgentPort {
public:
    static constexpr std::size_t kFifoSize = 64;
    static constexpr std::size_t kInputCapacity = 64 * 1024;
    static constexpr std::size_t kOutputCapacity = 64 * 1024;

    // `set_irq(level)` drives the IRQ line; `notify_host()` is called (from
    // a vCPU thread) when output becomes available or input room frees up.
    Serial(std::function<void(bool)> set_irq, std::function<void()> notify_host);

    void read(std::uint64_t offset, std::span<std::uint8_t> data) override;
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) override;

    // Host side. push_input takes as many bytes as fit and returns the count.
    std::size_t push_input(std::span<const std::uint8_t> bytes) override;
    [[nodiscard]] std::size_t input_room() const override;
    [[nodiscard]] std::size_t input_pending() const override;
    std::size_t pop_output(std::span<std::uint8_t> out) override;
    [[nodiscard]] std::size_t output_pending() const override;
    // Bytes a guest wrote while told the transmitter was busy (it ignored LSR).
    [[nodiscard]] std::uint64_t dropped_output() const override;

    // Lost-interrupt watchdog, called by the host every ~100 ms while the VM
    // runs. If the IRQ line has been asserted and the guest has not touched
    // the UART since the previous call, the edge that should have started
    // its interrupt handler was lost: lower and raise the line again so the
    // (edge-triggered) PIC sees a fresh edge. A spurious extra interrupt is
    // harmless (the 8250 handler finds IIR empty); a lost one would stall the
    // guest's transmitter forever. Returns true when it re-raised the line.
    bool retrigger_stalled_irq() override;
    [[nodiscard]] std::uint64_t irq_retriggers() const override;
    [[nodiscard]] std::string describe() const override;

    // Snapshot support. save_state captures every register and every byte
    // still queued either way (nothing is lost across a snapshot).
    // load_state replaces the whole state from such a blob, treating it as
    // untrusted: it throws DeviceStateError (and leaves the device as it
    // was) on a wrong version, a truncated blob, trailing bytes, a buffer
    // longer than its capacity or register values the device cannot hold.
    // On success it re-drives the IRQ line with the loaded level and wakes
    // the host, which must re-check both buffers.
    static constexpr std::uint8_t kStateVersion = 1;
    [[nodiscard]] std::vector<std::uint8_t> save_state() const;
    void load_state(std::span<const std::uint8_t> blob);

private:
    std::uint8_t read_reg(std::uint64_t offset);
    void write_reg(std::uint64_t offset, std::uint8_t value);
    [[nodiscard]] bool tx_has_room() const { return output_.size() + kFifoSize <= kOutputCapacity; }
    [[nodiscard]] std::uint8_t modem_status() const;
    void update_irq();  // with mu_ held

    mutable std::mutex mu_;
    std::function<void(bool)> set_irq_;
    std::function<void()> notify_host_;
    std::deque<std::uint8_t> input_;
    std::deque<std::uint8_t> output_;
    std::uint64_t dropped_output_ = 0;
    bool thri_pending_ = false;
    bool irq_level_ = false;
    std::uint64_t guest_accesses_ = 0;          // register reads and writes by the guest
    std::uint64_t accesses_at_last_check_ = 0;  // guest_accesses_ at the last watchdog call
    std::uint64_t irq_retriggers_ = 0;
    std::uint8_t ier_ = 0, fcr_ = 0, lcr_ = 0, mcr_ = 0, scr_ = 0;
    std::uint8_t dll_ = 0x0c, dlm_ = 0;  // 9600 baud until the driver sets it
};

}  // namespace forkvm::vmm
