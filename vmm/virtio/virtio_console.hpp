#pragma once
// virtio-console (virtio spec §5.3) with one port and no multiport control
// queue: the guest's virtio_console driver makes it /dev/hvc0, a tty. It
// carries the agent channel as a plain byte stream, so the framed protocol
// runs over it unchanged (docs/agent-protocol.md says why console and not
// vsock).
//
// Queue 0 (receiveq): buffers the guest posts for host → guest bytes.
// Queue 1 (transmitq): guest → host bytes. Linux's hvc driver sends one
// buffer of up to a page per notification and spins until the device has
// used it, so transmit buffers are taken during the notification itself
// whenever the output buffer has room; otherwise when the host has popped
// output (pop_output). Used transmit buffers raise no interrupt (the
// driver polls for them; see take_output).

#include <cstdint>
#include <deque>
#include <functional>

#include "vmm/devices/agent_port.hpp"
#include "vmm/virtio/virtio_pci.hpp"

namespace forkvm::vmm {

class VirtioConsole final : public VirtioPciDevice, public AgentPort {
public:
    static constexpr std::uint16_t kDeviceType = 3;
    static constexpr std::uint16_t kReceiveQueue = 0, kTransmitQueue = 1;
    // 16 buffers a queue: the guest posts a page per receive buffer and the
    // host fills them in ring order, so each clone makes at most 16 of those
    // pages its own (copy-on-write) however many messages it gets; 64 KiB in
    // flight per batch is still 16 pages per VM exit.
    static constexpr std::uint16_t kQueueSize = 16;
    static constexpr std::size_t kInputCapacity = 256 * 1024;
    static constexpr std::size_t kOutputCapacity = 256 * 1024;

    VirtioConsole(const GuestMemory& memory, std::uint32_t bar0_address, std::uint8_t irq,
                  VirtioPciCallbacks callbacks, std::function<void()> notify_host);

    std::size_t push_input(std::span<const std::uint8_t> bytes) override;
    [[nodiscard]] std::size_t input_room() const override;
    [[nodiscard]] std::size_t input_pending() const override;
    std::size_t pop_output(std::span<std::uint8_t> out) override;
    [[nodiscard]] std::size_t output_pending() const override;
    [[nodiscard]] std::uint64_t dropped_output() const override { return 0; }
    bool retrigger_stalled_irq() override { return VirtioPciDevice::retrigger_stalled_irq(); }
    [[nodiscard]] std::uint64_t irq_retriggers() const override { return VirtioPciDevice::irq_retriggers(); }
    [[nodiscard]] std::string describe() const override;

private:
    void on_queue_notify(std::uint16_t queue) override;
    void save_device(ByteWriter& w) const override;
    void load_device(ByteReader& r) override;

    void deliver_input();  // mu_ held
    void take_output();    // mu_ held

    std::function<void()> notify_host_;
    std::deque<std::uint8_t> input_;   // host → guest, not yet in a guest buffer
    std::deque<std::uint8_t> output_;  // guest → host, not yet popped
};

}  // namespace forkvm::vmm
