#pragma once
// The 256-byte configuration space of one PCI function (type 0 header), as
// a BIOS would leave it: identity, class, an interrupt line and pin, at most
// one 32-bit memory BAR (BAR0) already assigned, and a capability list.
// Writes go through a per-byte mask of what the guest may change (command,
// cache line, latency, interrupt line, the BAR's address bits), so BAR sizing
// (write all ones, read back the size mask) works without special cases, and
// read-only identity bytes cannot be changed by the guest or by a snapshot.

#include <array>
#include <cstdint>
#include <span>
#include <vector>

namespace forkvm::vmm {

struct PciIdentity {
    std::uint16_t vendor = 0;
    std::uint16_t device = 0;
    std::uint32_t class_code = 0;  // class << 16 | subclass << 8 | prog-if
    std::uint8_t revision = 0;
    std::uint16_t subsystem_vendor = 0;
    std::uint16_t subsystem = 0;
    std::uint8_t interrupt_line = 0;  // the legacy IRQ (PIC input) the function raises
    bool interrupt_pin = false;       // INTA# when true
};

class PciConfigSpace {
public:
    static constexpr std::size_t kSize = 256;
    static constexpr std::uint8_t kCommandMemory = 0x2;
    static constexpr std::uint16_t kCommandIntxDisable = 0x400;

    // bar0_size: 0 for none, else a power of two >= 16, placed at bar0_address.
    PciConfigSpace(const PciIdentity& id, std::uint32_t bar0_address, std::uint32_t bar0_size);

    // Appends a capability (its first byte is the ID, the second is the
    // next pointer, filled in here) and returns its offset.
    std::uint8_t add_capability(std::span<const std::uint8_t> body);

    // Any offset and length inside the 256 bytes (others read as ones and
    // are ignored).
    void read(std::size_t offset, std::span<std::uint8_t> data) const;
    void write(std::size_t offset, std::span<const std::uint8_t> data);

    // BAR0's guest address, when memory decoding is on and it is assigned.
    [[nodiscard]] bool decodes_memory() const;
    [[nodiscard]] std::uint32_t bar0_address() const;
    [[nodiscard]] std::uint32_t bar0_size() const noexcept { return bar0_size_; }
    [[nodiscard]] std::uint16_t command() const;

    // Snapshot: the whole space; load keeps every read-only byte as built
    // and takes only the writable bits from `saved` (exactly kSize bytes).
    [[nodiscard]] std::array<std::uint8_t, kSize> bytes() const noexcept { return bytes_; }
    void load(std::span<const std::uint8_t, kSize> saved);

private:
    void put16(std::size_t at, std::uint16_t v);
    void put32(std::size_t at, std::uint32_t v);

    std::array<std::uint8_t, kSize> bytes_{};
    std::array<std::uint8_t, kSize> writable_{};
    std::uint32_t bar0_size_ = 0;
    std::uint8_t next_cap_ = 0x40;
    std::uint8_t last_cap_ = 0;
};

}  // namespace forkvm::vmm
