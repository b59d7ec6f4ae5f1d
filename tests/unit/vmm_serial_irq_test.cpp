// The UART's IRQ line and its lost-interrupt watchdog (no KVM needed: the
// line is a callback).

#include <array>
#include <doctest/doctest.h>
#include <vector>

#include "vmm/devices/serial.hpp"

namespace {

using forkvm::vmm::Serial;

constexpr std::uint64_t kIer = 1;
constexpr std::uint64_t kIir = 2;

struct Line {
    std::vector<bool> changes;
};

void write_reg(Serial& s, std::uint64_t offset, std::uint8_t value) {
    std::array<std::uint8_t, 1> b{value};
    s.write(offset, b);
}

std::uint8_t read_reg(Serial& s, std::uint64_t offset) {
    std::array<std::uint8_t, 1> b{};
    s.read(offset, b);
    return b[0];
}

}  // namespace

TEST_CASE("vmm: UART raises its IRQ for THRE and drops it once IIR is read") {
    Line line;
    Serial s([&](bool level) { line.changes.push_back(level); }, [] {});
    write_reg(s, kIer, 0x02);  // THRI enable: the transmitter is empty, so THRE is pending
    REQUIRE(line.changes == std::vector<bool>{true});
    CHECK((read_reg(s, kIir) & 0x0f) == 0x02);
    CHECK(line.changes == std::vector<bool>{true, false});
}

TEST_CASE("vmm: UART watchdog re-raises a line the guest left untouched") {
    Line line;
    Serial s([&](bool level) { line.changes.push_back(level); }, [] {});
    write_reg(s, kIer, 0x02);
    REQUIRE(line.changes == std::vector<bool>{true});

    // First check: the guest touched the UART since the last one (the IER
    // write), so nothing is stalled yet.
    CHECK_FALSE(s.retrigger_stalled_irq());
    CHECK(line.changes.size() == 1);

    // No guest access since: the edge was lost; a fresh one is made.
    CHECK(s.retrigger_stalled_irq());
    CHECK(line.changes == std::vector<bool>{true, false, true});
    CHECK(s.irq_retriggers() == 1);

    // The guest handles it now: the line drops and the watchdog stays quiet.
    CHECK((read_reg(s, kIir) & 0x0f) == 0x02);
    CHECK_FALSE(s.retrigger_stalled_irq());
    CHECK_FALSE(s.retrigger_stalled_irq());  // line low: never re-raised
    CHECK(line.changes.back() == false);
    CHECK(s.irq_retriggers() == 1);
}
