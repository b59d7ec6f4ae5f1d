#pragma once
// The host side of the agent channel's device: a byte stream each way with
// bounded buffers, whichever device carries it (the virtio console, or the
// COM2 UART as the fallback). The VM process's main thread moves bytes
// between it and the agent socket; the device calls notify_host when there
// is output to take or input room freed. Nothing is ever dropped: input is
// taken only as far as there is room, and a guest whose output buffer is
// full waits.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace forkvm::vmm {

class AgentPort {
public:
    virtual ~AgentPort() = default;
    // Takes as many bytes as fit and returns the count.
    virtual std::size_t push_input(std::span<const std::uint8_t> bytes) = 0;
    [[nodiscard]] virtual std::size_t input_room() const = 0;
    // Bytes taken but not yet read by the guest.
    [[nodiscard]] virtual std::size_t input_pending() const = 0;
    virtual std::size_t pop_output(std::span<std::uint8_t> out) = 0;
    // Bytes (or guest buffers) written by the guest and not yet popped.
    [[nodiscard]] virtual std::size_t output_pending() const = 0;
    // Bytes a misbehaving guest wrote that the device had to drop.
    [[nodiscard]] virtual std::uint64_t dropped_output() const = 0;
    // The lost-interrupt watchdog (Serial::retrigger_stalled_irq).
    virtual bool retrigger_stalled_irq() = 0;
    [[nodiscard]] virtual std::uint64_t irq_retriggers() const = 0;
    // One line of the device's state for a diagnosis (buffered bytes, IRQ
    // line, queue positions): in the VM process's status reply.
    [[nodiscard]] virtual std::string describe() const = 0;
};

}  // namespace forkvm::vmm
