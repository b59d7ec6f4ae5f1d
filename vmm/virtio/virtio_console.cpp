#include "vmm/virtio/virtio_console.hpp"

#include <algorithm>
#include <fmt/format.h>

namespace forkvm::vmm {
namespace {

constexpr std::uint32_t kPciClassOtherCommunication = 0x078000;

}  // namespace

VirtioConsole::VirtioConsole(const GuestMemory& memory, std::uint32_t bar0_address, std::uint8_t irq,
                             VirtioPciCallbacks callbacks, std::function<void()> notify_host)
    : VirtioPciDevice(memory, kDeviceType, kPciClassOtherCommunication, bar0_address, irq, 2, kQueueSize,
                      std::move(callbacks)),
      notify_host_(std::move(notify_host)) {}

std::size_t VirtioConsole::push_input(std::span<const std::uint8_t> bytes) {
    std::lock_guard lock(mu_);
    const std::size_t n = std::min(bytes.size(), kInputCapacity - input_.size());
    input_.insert(input_.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    guarded([&] { deliver_input(); });
    return n;
}

std::size_t VirtioConsole::input_room() const {
    std::lock_guard lock(mu_);
    return kInputCapacity - input_.size();
}

std::size_t VirtioConsole::input_pending() const {
    std::lock_guard lock(mu_);
    return input_.size();
}

std::size_t VirtioConsole::pop_output(std::span<std::uint8_t> out) {
    std::lock_guard lock(mu_);
    const std::size_t n = std::min(out.size(), output_.size());
    std::copy_n(output_.begin(), n, out.begin());
    output_.erase(output_.begin(), output_.begin() + static_cast<std::ptrdiff_t>(n));
    guarded([&] { take_output(); });  // room freed: buffers the guest is waiting on
    return n;
}

std::size_t VirtioConsole::output_pending() const {
    std::lock_guard lock(mu_);
    std::size_t waiting = 0;
    if (const Virtqueue* q = live_queue(kTransmitQueue)) {
        try {
            waiting = q->available();
        } catch (const VirtqueueError&) {
            waiting = 1;  // broken: not idle either way
        }
    }
    return output_.size() + waiting;
}

std::string VirtioConsole::describe() const {
    std::size_t in = 0, out = 0;
    {
        std::lock_guard lock(mu_);
        in = input_.size();
        out = output_.size();
    }
    return fmt::format("virtio console: input {} output {}; {}", in, out, describe_transport());
}

void VirtioConsole::on_queue_notify(std::uint16_t queue) {
    // Every notification checks the driver's index, with or without work to do.
    if (const Virtqueue* q = live_queue(queue)) (void)q->available();
    if (queue == kReceiveQueue) {
        const bool had_input = !input_.empty();
        deliver_input();
        if (had_input && notify_host_) notify_host_();  // input room may have freed up
    } else if (queue == kTransmitQueue) {
        take_output();
    }
}

void VirtioConsole::deliver_input() {
    Virtqueue* q = live_queue(kReceiveQueue);
    if (!q) return;
    bool used = false;
    // At most one pass over the ring per call: a guest posting empty buffers
    // as fast as they are used cannot keep this thread here.
    for (std::uint16_t round = 0; round < q->state().size && !input_.empty(); ++round) {
        auto chain = q->pop();
        if (!chain) break;
        std::uint32_t written = 0;
        for (auto buffer : chain->writable) {
            const std::size_t n = std::min(buffer.size(), input_.size());
            std::copy_n(input_.begin(), n, buffer.begin());
            input_.erase(input_.begin(), input_.begin() + static_cast<std::ptrdiff_t>(n));
            written += static_cast<std::uint32_t>(n);
            if (input_.empty()) break;
        }
        q->push_used(chain->head, written);
        used = true;
    }
    if (used) signal_used(*q);
}

void VirtioConsole::take_output() {
    Virtqueue* q = live_queue(kTransmitQueue);
    if (!q) return;
    bool used = false;
    bool more = false;
    for (std::uint16_t round = 0;; ++round) {
        if (round == q->state().size) {
            more = true;  // the rest on the host's next pop_output
            break;
        }
        auto chain = q->pop();
        if (!chain) break;
        if (chain->readable_bytes > kOutputCapacity) {
            throw VirtqueueError(fmt::format("transmit buffer of {} bytes is larger than the device's {}",
                                             chain->readable_bytes, kOutputCapacity));
        }
        if (output_.size() + chain->readable_bytes > kOutputCapacity) {
            q->unpop();  // taken once the host has made room
            break;
        }
        for (auto buffer : chain->readable) output_.insert(output_.end(), buffer.begin(), buffer.end());
        q->push_used(chain->head, 0);
        used = true;
    }
    // No interrupt for used transmit buffers: Linux's console path (hvc's
    // put_chars) spins until its buffer is used and reaps it itself, so the
    // interrupt would find nothing to do, and Linux counts such interrupts
    // as unhandled until it disables the line ("irq 5: nobody cared"). The
    // driver's transmit callback only wakes writers of a multiport port,
    // which this device does not offer. It also saves the ISR read's exit.
    if ((used || more) && notify_host_) notify_host_();
}

void VirtioConsole::save_device(ByteWriter& w) const {
    w.length_prefixed(input_);
    w.length_prefixed(output_);
}

void VirtioConsole::load_device(ByteReader& r) {
    const auto input = r.length_prefixed(kInputCapacity, "input buffer");
    const auto output = r.length_prefixed(kOutputCapacity, "output buffer");
    r.expect_end();
    input_.assign(input.begin(), input.end());
    output_.assign(output.begin(), output.end());
    if (notify_host_) notify_host_();  // the host re-checks both buffers
}

}  // namespace forkvm::vmm
