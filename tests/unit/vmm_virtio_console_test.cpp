// The virtio console and its PCI transport, driven the way Linux's
// virtio_pci and virtio_console drivers drive them (tests/support/
// virtio_driver.hpp): PCI discovery through ports 0xCF8/0xCFC, feature
// negotiation, both directions of the byte stream with back-pressure,
// interrupts, hostile queues marking the device broken, and snapshots.

#include <cstdint>
#include <cstring>
#include <doctest/doctest.h>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tests/support/virtio_driver.hpp"
#include "vmm/devices/device_state.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/pci/pci_root.hpp"
#include "vmm/virtio/virtio_console.hpp"

using forkvm::test::VirtioTestDriver;
using forkvm::vmm::DeviceStateError;
using forkvm::vmm::GuestMemory;
using forkvm::vmm::PciRoot;
using forkvm::vmm::VirtioConsole;
using forkvm::vmm::VirtioPciCallbacks;
using forkvm::vmm::VirtioPciDevice;

namespace {

constexpr std::uint32_t kBar = 0xd0000000;
constexpr std::uint16_t kRx = VirtioConsole::kReceiveQueue, kTx = VirtioConsole::kTransmitQueue;
constexpr std::uint64_t kData = 0x10000;  // test buffers start here

std::vector<std::uint8_t> bytes_of(std::string_view s) { return {s.begin(), s.end()}; }

// A console over 1 MiB of guest memory, recording its IRQ line, host
// wake-ups and breakage, with a driver that has set both queues up.
struct Rig {
    GuestMemory memory = GuestMemory::anonymous(1 << 20);
    std::vector<bool> irq;
    int notified = 0;
    std::vector<std::string> broken;
    VirtioConsole console{memory, kBar, 5,
                          VirtioPciCallbacks{[this](bool level) { irq.push_back(level); },
                                             [this](const std::string& why) { broken.push_back(why); }},
                          [this] { ++notified; }};
    VirtioTestDriver driver{console, memory};

    explicit Rig(bool ready = true) {
        if (!ready) return;
        REQUIRE((driver.negotiate() & VirtioPciDevice::kFeaturesOk));
        driver.setup_queue(kRx, 16, 0x1000, 0x2000, 0x3000);
        driver.setup_queue(kTx, 16, 0x4000, 0x5000, 0x6000);
        driver.driver_ok();
    }
    [[nodiscard]] bool irq_high() const { return !irq.empty() && irq.back(); }
    std::string guest_bytes(std::uint64_t gpa, std::size_t n) {
        std::string s(n, '\0');
        REQUIRE(memory.read(gpa, std::span(reinterpret_cast<std::uint8_t*>(s.data()), n)));
        return s;
    }
    void put_guest(std::uint64_t gpa, std::string_view s) {
        REQUIRE(memory.write(gpa, std::span(reinterpret_cast<const std::uint8_t*>(s.data()), s.size())));
    }
    std::string pop_all() {
        std::string out;
        std::vector<std::uint8_t> buf(4096);
        while (std::size_t n = console.pop_output(buf))
            out.append(buf.begin(), buf.begin() + static_cast<long>(n));
        return out;
    }
};

std::uint32_t config_read32(PciRoot& root, std::uint8_t slot, std::uint8_t reg) {
    std::uint32_t address = 0x80000000U | (std::uint32_t{slot} << 11) | reg;
    std::uint8_t a[4], d[4];
    std::memcpy(a, &address, 4);
    root.config_ports()->write(0, a);
    root.config_ports()->read(4, d);
    std::uint32_t v = 0;
    std::memcpy(&v, d, 4);
    return v;
}

void config_write32(PciRoot& root, std::uint8_t slot, std::uint8_t reg, std::uint32_t value) {
    std::uint32_t address = 0x80000000U | (std::uint32_t{slot} << 11) | reg;
    std::uint8_t a[4], d[4];
    std::memcpy(a, &address, 4);
    std::memcpy(d, &value, 4);
    root.config_ports()->write(0, a);
    root.config_ports()->write(4, d);
}

}  // namespace

TEST_CASE(
    "pci: the host bridge and a virtio console are found through ports 0xCF8/0xCFC with their capabilities") {
    Rig rig(false);
    PciRoot root;
    std::shared_ptr<VirtioConsole> shared(&rig.console, [](VirtioConsole*) {});
    root.add(1, shared);
    CHECK(config_read32(root, 0, 0x00) == 0x00081b36U);           // host bridge vendor/device
    CHECK((config_read32(root, 0, 0x08) >> 8 == 0x060000U));      // class: host bridge
    CHECK(config_read32(root, 1, 0x00) == 0x10431af4U);           // virtio console, modern ID
    CHECK(config_read32(root, 2, 0x00) == 0xffffffffU);           // an empty slot
    CHECK(((config_read32(root, 1, 0x3c) & 0xffff) == 0x0105U));  // INTA#, line 5

    // The capability list holds common, notify, ISR and device config, all in BAR0.
    CHECK(((config_read32(root, 1, 0x04) >> 16) & 0x10));  // status: capability list
    std::uint8_t cap = static_cast<std::uint8_t>(config_read32(root, 1, 0x34));
    std::vector<std::uint8_t> types;
    for (int guard = 0; cap != 0 && guard < 48; ++guard) {
        const std::uint32_t head = config_read32(root, 1, cap);
        CHECK(((head & 0xff) == 0x09));  // vendor-specific
        types.push_back(static_cast<std::uint8_t>(head >> 24));
        CHECK(((config_read32(root, 1, cap + 4) & 0xff) == 0));  // bar 0
        cap = static_cast<std::uint8_t>(head >> 8);
    }
    CHECK(types == std::vector<std::uint8_t>{1, 2, 3, 4});

    // BAR sizing: all ones reads back the size mask; the address comes back.
    CHECK(config_read32(root, 1, 0x10) == kBar);
    config_write32(root, 1, 0x10, 0xffffffffU);
    CHECK(config_read32(root, 1, 0x10) == 0xffffc000U);
    config_write32(root, 1, 0x10, kBar);
    CHECK(config_read32(root, 1, 0x10) == kBar);
    // Identity is read-only.
    config_write32(root, 1, 0x00, 0);
    CHECK(config_read32(root, 1, 0x00) == 0x10431af4U);

    // The MMIO window reaches BAR0 only while memory decoding is on.
    std::uint8_t b[2];
    root.mmio_window()->read(0x12, b);  // num_queues
    CHECK(b[0] == 2);
    config_write32(root, 1, 0x04, 0);  // command: decoding off (as Linux does while sizing)
    root.mmio_window()->read(0x12, b);
    CHECK(b[0] == 0xff);

    // A byte write to 0xCFB (Linux's probe) does not change the address register.
    std::uint8_t one = 1;
    root.config_ports()->write(3, std::span<const std::uint8_t>(&one, 1));
    CHECK(config_read32(root, 1, 0x00) == 0x10431af4U);
}

TEST_CASE("virtio: features are kept only with VERSION_1 and only those offered") {
    Rig rig(false);
    CHECK(rig.driver.read<std::uint32_t>(0x04) == 0);  // select 0: no device-specific features
    rig.driver.write<std::uint32_t>(0x00, 1);
    CHECK(rig.driver.read<std::uint32_t>(0x04) == 1);  // VERSION_1 is bit 32
    CHECK_FALSE((rig.driver.negotiate(0) & VirtioPciDevice::kFeaturesOk));
    CHECK_FALSE((rig.driver.negotiate(VirtioPciDevice::kFeatureVersion1 | 1) & VirtioPciDevice::kFeaturesOk));
    CHECK((rig.driver.negotiate() & VirtioPciDevice::kFeaturesOk));
    rig.driver.set_status(0);
    CHECK(rig.driver.status() == 0);
    CHECK(rig.broken.empty());
}

TEST_CASE("virtio console: guest output arrives in order, used at once and without an interrupt") {
    Rig rig;
    rig.put_guest(kData, "hello, ");
    rig.put_guest(kData + 0x100, "host");
    const std::uint16_t head = rig.driver.add_chain(kTx, {{kData, 7, false}, {kData + 0x100, 4, false}});
    CHECK(rig.driver.take_used(kTx) == std::vector<std::pair<std::uint32_t, std::uint32_t>>{{head, 0}});
    // Linux polls for used transmit buffers: an interrupt would find nothing.
    CHECK_FALSE(rig.irq_high());
    CHECK(rig.driver.read_isr() == 0);
    CHECK(rig.notified > 0);
    CHECK(rig.console.output_pending() == 11);
    CHECK(rig.pop_all() == "hello, host");
}

TEST_CASE(
    "virtio console: used receive buffers raise the line until the ISR read, unless the driver declines") {
    Rig rig;
    rig.driver.add_chain(kRx, {{kData, 8, true}});
    CHECK(rig.console.push_input(bytes_of("ping")) == 4);
    CHECK(rig.irq_high());
    CHECK(rig.driver.read_isr() == 1);
    CHECK_FALSE(rig.irq_high());
    CHECK(rig.driver.read_isr() == 0);

    // The watchdog re-raises a line no ISR read has answered since its last look.
    CHECK(rig.console.push_input(bytes_of("x")) == 1);  // staged: no buffer posted
    rig.driver.add_chain(kRx, {{kData, 8, true}});
    CHECK(rig.irq_high());
    CHECK_FALSE(rig.console.retrigger_stalled_irq());  // first look: the line just rose
    const std::size_t calls = rig.irq.size();
    rig.driver.add_chain(kTx, {{kData, 1, false}});  // guest activity other than an ISR read
    CHECK(rig.console.retrigger_stalled_irq());
    CHECK(rig.irq.size() == calls + 2);  // lowered, raised
    CHECK(rig.irq_high());
    CHECK(rig.driver.read_isr() == 1);
    CHECK_FALSE(rig.console.retrigger_stalled_irq());

    // NO_INTERRUPT: buffers are used without raising the line.
    rig.driver.set_avail_flags(kRx, 1);
    rig.driver.add_chain(kRx, {{kData, 8, true}});
    CHECK(rig.console.push_input(bytes_of("quiet")) == 5);
    CHECK(rig.guest_bytes(kData, 5) == "quiet");
    CHECK_FALSE(rig.irq_high());
}

TEST_CASE("virtio console: host input fills the guest's buffers and waits for more when they run out") {
    Rig rig;
    const std::uint16_t a = rig.driver.add_chain(kRx, {{kData, 4, true}});
    CHECK(rig.console.push_input(bytes_of("abcdefghij")) == 10);
    CHECK((rig.driver.take_used(kRx) == std::vector<std::pair<std::uint32_t, std::uint32_t>>{{a, 4}}));
    CHECK(rig.guest_bytes(kData, 4) == "abcd");
    CHECK(rig.console.input_pending() == 6);
    CHECK(rig.irq_high());

    const int before = rig.notified;
    const std::uint16_t b = rig.driver.add_chain(kRx, {{kData + 0x100, 2, true}, {kData + 0x200, 100, true}});
    CHECK((rig.driver.take_used(kRx) == std::vector<std::pair<std::uint32_t, std::uint32_t>>{{b, 6}}));
    CHECK(rig.guest_bytes(kData + 0x100, 2) == "ef");
    CHECK(rig.guest_bytes(kData + 0x200, 4) == "ghij");
    CHECK(rig.console.input_pending() == 0);
    CHECK(rig.notified > before);  // room freed: the host may read more

    // Input is taken only up to the staging capacity.
    std::vector<std::uint8_t> big(VirtioConsole::kInputCapacity + 10, 'x');
    CHECK(rig.console.push_input(big) == VirtioConsole::kInputCapacity);
    CHECK(rig.console.input_room() == 0);
}

TEST_CASE("virtio console: a full output buffer leaves the guest's buffer waiting until the host pops") {
    Rig rig;
    const std::string page(4096, 'p');
    for (std::uint64_t i = 0; i < 16; ++i) rig.put_guest(kData + i * 4096, page);
    // Fill the output buffer to capacity with 4 KiB chains.
    std::size_t queued = 0;
    for (std::uint64_t i = 0; queued < VirtioConsole::kOutputCapacity; ++i) {
        rig.driver.add_chain(kTx, {{kData + (i % 16) * 4096, 4096, false}});
        queued += 4096;
        rig.driver.take_used(kTx);
    }
    CHECK(rig.console.output_pending() == VirtioConsole::kOutputCapacity);
    rig.driver.add_chain(kTx, {{kData, 4096, false}});
    CHECK(rig.driver.take_used(kTx).empty());  // not taken: no room
    CHECK(rig.console.output_pending() == VirtioConsole::kOutputCapacity + 1);
    std::vector<std::uint8_t> out(8192);
    CHECK(rig.console.pop_output(out) == 8192);
    CHECK(rig.driver.take_used(kTx).size() == 1);  // taken once room was made
    CHECK(rig.console.output_pending() == VirtioConsole::kOutputCapacity - 4096);
    CHECK(rig.broken.empty());
}

namespace {

// Runs `hostile` on a ready rig and checks the device went broken once,
// with a reason containing `why`, and ignores the queues afterwards.
template <typename Hostile>
void expect_broken(Hostile hostile, std::string_view why) {
    Rig rig;
    hostile(rig);
    REQUIRE(rig.broken.size() == 1);
    CHECK(rig.broken[0].find(why) != std::string::npos);
    CHECK(rig.console.broken_reason() == rig.broken[0]);
    CHECK((rig.driver.status() & VirtioPciDevice::kNeedsReset));
    // Later notifications do nothing and report nothing more.
    rig.put_guest(kData, "x");
    rig.driver.add_chain(kTx, {{kData, 1, false}});
    CHECK(rig.console.output_pending() == 0);
    CHECK(rig.broken.size() == 1);
    // A reset by the driver brings the device back.
    CHECK((rig.driver.negotiate() & VirtioPciDevice::kFeaturesOk));
    CHECK_FALSE(rig.console.broken_reason());
}

}  // namespace

TEST_CASE("virtio console: hostile queues mark the device broken, never the host") {
    SUBCASE("a buffer outside guest RAM") {
        expect_broken(
            [](Rig& r) {
                r.driver.add_chain(kTx, {{(1 << 20) - 2, 4, false}});
            },
            "not in guest RAM");
    }
    SUBCASE("a buffer whose length wraps the address space") {
        expect_broken(
            [](Rig& r) {
                r.driver.add_chain(kTx, {{0xfffffffffffff000ULL, 0x2000, false}});
            },
            "not in guest RAM");
    }
    SUBCASE("a descriptor chain that loops") {
        expect_broken(
            [](Rig& r) {
                r.driver.write_desc(kTx, 0, kData, 1, 1, 1);
                r.driver.write_desc(kTx, 1, kData, 1, 1, 0);
                r.driver.publish(kTx, 0);
                r.driver.notify(kTx);
            },
            "a loop");
    }
    SUBCASE("a next index past the queue") {
        expect_broken(
            [](Rig& r) {
                r.driver.write_desc(kTx, 0, kData, 1, 1, 500);
                r.driver.publish(kTx, 0);
                r.driver.notify(kTx);
            },
            "past the queue size");
    }
    SUBCASE("an avail ring entry naming a descriptor past the queue") {
        expect_broken(
            [](Rig& r) {
                r.driver.publish(kTx, 16);
                r.driver.notify(kTx);
            },
            "names descriptor 16");
    }
    SUBCASE("an avail index running ahead of the ring") {
        expect_broken(
            [](Rig& r) {
                r.driver.set_avail_idx(kRx, 40);
                r.driver.notify(kRx);
            },
            "entries ahead");
    }
    SUBCASE("indirect descriptors, never offered") {
        expect_broken(
            [](Rig& r) {
                r.driver.write_desc(kTx, 0, kData, 16, 4, 0);
                r.driver.publish(kTx, 0);
                r.driver.notify(kTx);
            },
            "indirect");
    }
    SUBCASE("a readable buffer after a writable one") {
        expect_broken(
            [](Rig& r) {
                r.driver.add_chain(kTx, {{kData, 1, true}, {kData, 1, false}});
            },
            "device-readable buffer after");
    }
    SUBCASE("a transmit chain larger than the output buffer") {
        expect_broken(
            [](Rig& r) {
                r.driver.add_chain(kTx, {{kData, 200 * 1024, false}, {kData, 200 * 1024, false}});
            },
            "larger than");
    }
    SUBCASE("a ring outside guest RAM or misaligned, at enable") {
        expect_broken(
            [](Rig& r) {
                r.driver.negotiate();  // resets first
                r.driver.setup_queue(kRx, 16, 0xff000, 0x2001, 0x3000);
            },
            "not 2-byte aligned");
    }
    SUBCASE("a queue size that is not a power of two") {
        expect_broken(
            [](Rig& r) {
                r.driver.negotiate();
                r.driver.setup_queue(kTx, 12, 0x4000, 0x5000, 0x6000);
            },
            "not a power of two");
    }
}

TEST_CASE("virtio console: a snapshot mid-stream restores into a fresh device that carries on exactly") {
    Rig rig;
    rig.put_guest(kData, "partial output");
    rig.driver.add_chain(kTx, {{kData, 14, false}});
    rig.driver.add_chain(kRx, {{kData + 0x1000, 3, true}});
    CHECK(rig.console.push_input(bytes_of("input!")) == 6);  // 3 delivered, 3 staged
    const std::vector<std::uint8_t> saved = rig.console.save_state();

    Rig copy(false);  // same memory layout; rings copied with the memory
    std::vector<std::uint8_t> ram(1 << 20);
    REQUIRE(rig.memory.read(0, ram));
    REQUIRE(copy.memory.write(0, ram));
    copy.console.load_state(saved);
    CHECK(copy.console.save_state() == saved);
    CHECK(copy.irq_high());  // the line is re-driven at its saved level
    CHECK(copy.pop_all() == "partial output");
    // The driver carries on: the device is set up already (these writes to
    // an enabled queue change nothing; they give the test driver the
    // layout), the original published one receive chain, and a new one
    // takes the staged bytes.
    copy.driver.setup_queue(kRx, 16, 0x1000, 0x2000, 0x3000);
    copy.driver.take_used(kRx);
    copy.driver.set_avail_idx(kRx, 1);
    copy.driver.add_chain(kRx, {{kData + 0x2000, 16, true}});
    CHECK(copy.guest_bytes(kData + 0x2000, 3) == "ut!");
    CHECK(copy.console.input_pending() == 0);
    CHECK(copy.broken.empty());
}

TEST_CASE("virtio console: hostile or mismatched state blobs are refused and leave the device as it was") {
    Rig rig;
    const std::vector<std::uint8_t> good = rig.console.save_state();
    Rig other;
    other.driver.add_chain(kRx, {{kData, 8, true}});  // so that `good` differs from `other`
    const std::vector<std::uint8_t> before = other.console.save_state();
    auto refused = [&](std::vector<std::uint8_t> blob) {
        CHECK_THROWS_AS(other.console.load_state(blob), DeviceStateError);
        CHECK(other.console.save_state() == before);
    };
    refused({});
    refused(std::vector<std::uint8_t>(good.begin(), good.end() - 1));  // truncated
    auto trailing = good;
    trailing.push_back(0);
    refused(trailing);
    auto version = good;
    version[0] = 99;
    refused(version);
    // Queue 0's descriptor table moved outside guest RAM: the first queue
    // record follows the header (1 + 2 + 256 + 4 + 4 + 8 + 1 + 2 + 1 + 1 +
    // 4 + 0 + 2 bytes), its size (2) and enabled flag (1).
    auto ring = good;
    const std::size_t desc_at = 1 + 2 + 256 + 4 + 4 + 8 + 1 + 2 + 1 + 1 + 4 + 2 + 2 + 1;
    const std::uint64_t outside = 1ULL << 40;
    std::memcpy(ring.data() + desc_at, &outside, 8);
    refused(ring);
    other.console.load_state(good);  // and a good one loads
    CHECK(other.console.save_state() == good);
}
