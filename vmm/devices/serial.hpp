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

#include "vmm/bus.hpp"

namespace forkvm::vmm {

class Serial final : public BusDevice {
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
    std::size_t push_input(std::span<const std::uint8_t> bytes);
    [[nodiscard]] std::size_t input_room() const;
    [[nodiscard]] std::size_t input_pending() const;
    std::size_t pop_output(std::span<std::uint8_t> out);
    [[nodiscard]] std::size_t output_pending() const;
    // Bytes a guest wrote while told the transmitter was busy (it ignored LSR).
    [[nodiscard]] std::uint64_t dropped_output() const;

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
    std::uint8_t ier_ = 0, fcr_ = 0, lcr_ = 0, mcr_ = 0, scr_ = 0;
    std::uint8_t dll_ = 0x0c, dlm_ = 0;  // 9600 baud until the driver sets it
};

}  // namespace forkvm::vmm
