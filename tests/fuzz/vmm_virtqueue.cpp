// Fuzz target: a virtio console whose queues live in guest memory filled
// with the input's bytes, driven by a script from the same input (notify
// either queue, push host input, pop output, read the ISR, snapshot and
// reload). Every descriptor, index and length the device reads is whatever
// the fuzzer wrote. Invariants: never crash or hang; the device reports
// breakage at most once and does nothing after it; buffered bytes never
// exceed the capacities; a saved state loads into a fresh device and saves
// back identically.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

#include "tests/support/virtio_driver.hpp"
#include "vmm/devices/device_state.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/virtio/virtio_console.hpp"

namespace {

using forkvm::vmm::GuestMemory;
using forkvm::vmm::VirtioConsole;

constexpr std::size_t kMemory = 64 * 1024;

struct Input {
    std::span<const std::uint8_t> data;
    std::size_t pos = 0;
    std::uint8_t u8() { return pos < data.size() ? data[pos++] : 0; }
    std::uint16_t u16() { return static_cast<std::uint16_t>(u8() | u8() << 8); }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    Input in{std::span<const std::uint8_t>(data, size)};
    GuestMemory memory = GuestMemory::anonymous(kMemory);
    int broken = 0;
    auto callbacks = forkvm::vmm::VirtioPciCallbacks{[](bool) {}, [&](const std::string&) { ++broken; }};
    VirtioConsole console(memory, 0xd0000000, 5, callbacks, [] {});
    forkvm::test::VirtioTestDriver driver(console, memory);

    // Queue layout from the input (anywhere in the 64 KiB, any size), then
    // up to 8 KiB of input copied over the start of guest memory: the rings
    // and descriptors the device will read.
    const std::uint16_t rx_size = in.u16(), tx_size = in.u16();
    const std::uint16_t rx_desc = in.u16(), rx_avail = in.u16(), rx_used = in.u16();
    const std::uint16_t tx_desc = in.u16(), tx_avail = in.u16(), tx_used = in.u16();
    const std::size_t image = std::min<std::size_t>(size - std::min(size, in.pos), 8192);
    if (image) (void)memory.write(0, std::span<const std::uint8_t>(data + in.pos, image));
    in.pos += image;

    driver.negotiate();
    driver.setup_queue(VirtioConsole::kReceiveQueue, rx_size, rx_desc, rx_avail, rx_used);
    driver.setup_queue(VirtioConsole::kTransmitQueue, tx_size, tx_desc, tx_avail, tx_used);
    driver.driver_ok();

    std::vector<std::uint8_t> buf(4096, 0x5a);
    for (int step = 0; step < 64 && in.pos < size; ++step) {
        const int broken_before = broken;
        const std::size_t out_before = console.output_pending();
        switch (in.u8() % 6) {
            case 0: driver.notify(VirtioConsole::kReceiveQueue); break;
            case 1: driver.notify(VirtioConsole::kTransmitQueue); break;
            case 2:
                (void)console.push_input(std::span<const std::uint8_t>(buf.data(), in.u16() % buf.size()));
                break;
            case 3:
                (void)console.pop_output(std::span<std::uint8_t>(buf.data(), in.u16() % buf.size()));
                break;
            case 4: (void)driver.read_isr(); break;
            case 5: {
                const auto saved = console.save_state();
                VirtioConsole fresh(memory, 0xd0000000, 5, forkvm::vmm::VirtioPciCallbacks{}, [] {});
                fresh.load_state(saved);  // must not throw: the device saved it
                if (fresh.save_state() != saved) std::abort();
                break;
            }
            default: break;
        }
        if (broken > 1) std::abort();  // reported once only
        // Once broken, the device takes nothing more from the guest.
        const std::size_t out_now = console.output_pending();
        if (broken_before && out_now > out_before) std::abort();
        if (out_now > VirtioConsole::kOutputCapacity + forkvm::vmm::Virtqueue::kMaxSize) std::abort();
        if (console.input_pending() > VirtioConsole::kInputCapacity) std::abort();
    }
    return 0;
}
