// Fuzz target: load any bytes as a device state blob, for the UART (the
// device with the most state) and, from the same bytes, the i8042 and the
// CMOS RTC. Invariants: never crash; a rejected blob throws only
// DeviceStateError and leaves the device unchanged; an accepted blob saves
// back to exactly the same bytes (the encoding is canonical), and those
// bytes load into a fresh device to the same state.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "vmm/devices/cmos_rtc.hpp"
#include "vmm/devices/device_state.hpp"
#include "vmm/devices/i8042.hpp"
#include "vmm/devices/serial.hpp"

namespace {

template <typename Device, typename MakeDevice>
void check_device(std::span<const std::uint8_t> input, MakeDevice make) {
    Device device = make();
    const std::vector<std::uint8_t> before = device.save_state();
    try {
        device.load_state(input);
    } catch (const forkvm::vmm::DeviceStateError&) {
        if (device.save_state() != before) std::abort();  // a failed load changed the device
        return;
    }
    const std::vector<std::uint8_t> saved = device.save_state();
    if (saved.size() != input.size() || !std::equal(saved.begin(), saved.end(), input.begin())) std::abort();
    Device again = make();
    again.load_state(saved);  // must not throw
    if (again.save_state() != saved) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    std::span<const std::uint8_t> input(data, size);

    // The serial device must also drive its IRQ line exactly once per
    // successful load, with the level the blob holds.
    {
        int irq_calls = 0;
        bool level = false;
        forkvm::vmm::Serial serial(
            [&](bool l) {
                ++irq_calls;
                level = l;
            },
            nullptr);
        bool loaded = true;
        try {
            serial.load_state(input);
        } catch (const forkvm::vmm::DeviceStateError&) {
            loaded = false;
        }
        if (loaded) {
            if (irq_calls != 1 || size < 10 || level != (data[9] == 1)) std::abort();
        } else if (irq_calls != 0) {
            std::abort();
        }
    }

    check_device<forkvm::vmm::Serial>(input, [] { return forkvm::vmm::Serial(nullptr, nullptr); });
    check_device<forkvm::vmm::I8042>(input, [] { return forkvm::vmm::I8042(nullptr); });
    check_device<forkvm::vmm::CmosRtc>(input, [] { return forkvm::vmm::CmosRtc(); });
    return 0;
}
