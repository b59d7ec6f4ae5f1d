#include "vmm/pci/pci_config.hpp"

#include <bit>
#include <cstring>
#include <stdexcept>

namespace forkvm::vmm {
namespace {

constexpr std::size_t kVendor = 0x00, kCommand = 0x04, kStatus = 0x06, kRevision = 0x08, kCacheLine = 0x0c,
                      kLatency = 0x0d, kBar0 = 0x10, kSubsystemVendor = 0x2c, kCapPointer = 0x34,
                      kInterruptLine = 0x3c, kInterruptPin = 0x3d;
constexpr std::uint16_t kStatusCapList = 0x10;
// Command bits a function may have set: I/O, memory, bus master, INTx disable.
constexpr std::uint16_t kCommandWritable = 0x0007 | PciConfigSpace::kCommandIntxDisable;

}  // namespace

PciConfigSpace::PciConfigSpace(const PciIdentity& id, std::uint32_t bar0_address, std::uint32_t bar0_size)
    : bar0_size_(bar0_size) {
    if (bar0_size != 0 &&
        (bar0_size < 16 || !std::has_single_bit(bar0_size) || bar0_address % bar0_size != 0)) {
        throw std::invalid_argument(
            "PciConfigSpace: BAR0 size must be a power of two >= 16, address aligned");
    }
    put16(kVendor, id.vendor);
    put16(kVendor + 2, id.device);
    bytes_[kRevision] = id.revision;
    bytes_[kRevision + 1] = static_cast<std::uint8_t>(id.class_code);
    bytes_[kRevision + 2] = static_cast<std::uint8_t>(id.class_code >> 8);
    bytes_[kRevision + 3] = static_cast<std::uint8_t>(id.class_code >> 16);
    put16(kSubsystemVendor, id.subsystem_vendor);
    put16(kSubsystemVendor + 2, id.subsystem);
    bytes_[kInterruptLine] = id.interrupt_line;
    bytes_[kInterruptPin] = id.interrupt_pin ? 1 : 0;
    writable_[kCommand] = static_cast<std::uint8_t>(kCommandWritable);
    writable_[kCommand + 1] = static_cast<std::uint8_t>(kCommandWritable >> 8);
    writable_[kCacheLine] = writable_[kLatency] = writable_[kInterruptLine] = 0xff;
    if (bar0_size != 0) {
        put32(kBar0, bar0_address);  // 32-bit, non-prefetchable memory: type bits 0
        const std::uint32_t address_bits = ~(bar0_size - 1);
        for (std::size_t i = 0; i < 4; ++i)
            writable_[kBar0 + i] = static_cast<std::uint8_t>(address_bits >> (8 * i));
        put16(kCommand, kCommandMemory);  // assigned and enabled, as firmware leaves it
    }
}

std::uint8_t PciConfigSpace::add_capability(std::span<const std::uint8_t> body) {
    if (body.size() < 2 || next_cap_ + body.size() > kSize) {
        throw std::invalid_argument("PciConfigSpace: capability does not fit");
    }
    const std::uint8_t at = next_cap_;
    std::memcpy(bytes_.data() + at, body.data(), body.size());
    bytes_[at + 1] = 0;
    if (last_cap_ == 0) {
        bytes_[kCapPointer] = at;
        put16(kStatus, kStatusCapList);
    } else {
        bytes_[last_cap_ + 1] = at;
    }
    last_cap_ = at;
    next_cap_ = static_cast<std::uint8_t>((at + body.size() + 3) & ~std::size_t{3});
    return at;
}

void PciConfigSpace::read(std::size_t offset, std::span<std::uint8_t> data) const {
    for (std::size_t i = 0; i < data.size(); ++i) {
        data[i] = offset + i < kSize ? bytes_[offset + i] : 0xff;
    }
}

void PciConfigSpace::write(std::size_t offset, std::span<const std::uint8_t> data) {
    for (std::size_t i = 0; i < data.size() && offset + i < kSize; ++i) {
        const std::size_t at = offset + i;
        bytes_[at] = static_cast<std::uint8_t>((bytes_[at] & ~writable_[at]) | (data[i] & writable_[at]));
    }
}

std::uint16_t PciConfigSpace::command() const {
    return static_cast<std::uint16_t>(bytes_[kCommand] | bytes_[kCommand + 1] << 8);
}

bool PciConfigSpace::decodes_memory() const {
    return bar0_size_ != 0 && (command() & kCommandMemory) != 0 && bar0_address() != 0;
}

std::uint32_t PciConfigSpace::bar0_address() const {
    std::uint32_t v = 0;
    std::memcpy(&v, bytes_.data() + kBar0, 4);
    return v & ~std::uint32_t{0xf};
}

void PciConfigSpace::load(std::span<const std::uint8_t, kSize> saved) {
    for (std::size_t i = 0; i < kSize; ++i) {
        bytes_[i] = static_cast<std::uint8_t>((bytes_[i] & ~writable_[i]) | (saved[i] & writable_[i]));
    }
}

void PciConfigSpace::put16(std::size_t at, std::uint16_t v) {
    bytes_[at] = static_cast<std::uint8_t>(v);
    bytes_[at + 1] = static_cast<std::uint8_t>(v >> 8);
}

void PciConfigSpace::put32(std::size_t at, std::uint32_t v) {
    put16(at, static_cast<std::uint16_t>(v));
    put16(at + 2, static_cast<std::uint16_t>(v >> 16));
}

}  // namespace forkvm::vmm
