#include "vmm/pci/pci_root.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "vmm/devices/device_state.hpp"

namespace forkvm::vmm {

// 00:00.0: a host bridge with no BAR. Its presence is what Linux's
// conf1 sanity check looks for.
class PciRoot::HostBridge final : public PciFunction {
public:
    HostBridge() : config_(identity(), 0, 0) {}

    void config_read(std::size_t offset, std::span<std::uint8_t> data) override {
        std::lock_guard lock(mu_);
        config_.read(offset, data);
    }
    void config_write(std::size_t offset, std::span<const std::uint8_t> data) override {
        std::lock_guard lock(mu_);
        config_.write(offset, data);
    }
    [[nodiscard]] Window bar0_window() const override { return {}; }
    void bar0_read(std::uint64_t, std::span<std::uint8_t> data) override { std::ranges::fill(data, 0xff); }
    void bar0_write(std::uint64_t, std::span<const std::uint8_t>) override {}

    [[nodiscard]] std::array<std::uint8_t, PciConfigSpace::kSize> bytes() const {
        std::lock_guard lock(mu_);
        return config_.bytes();
    }
    void load(std::span<const std::uint8_t, PciConfigSpace::kSize> saved) {
        std::lock_guard lock(mu_);
        config_.load(saved);
    }

private:
    static PciIdentity identity() {
        PciIdentity id;
        id.vendor = 0x1b36;  // Red Hat, Inc. (the IDs QEMU's generic host bridge uses)
        id.device = 0x0008;
        id.class_code = 0x060000;  // bridge, host bridge
        return id;
    }
    mutable std::mutex mu_;
    PciConfigSpace config_;
};

class PciRoot::ConfigPorts final : public BusDevice {
public:
    explicit ConfigPorts(PciRoot& root) : root_(root) {}
    void read(std::uint64_t offset, std::span<std::uint8_t> data) override {
        root_.config_access(offset, data, {});
    }
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) override {
        root_.config_access(offset, {}, data);
    }

private:
    PciRoot& root_;
};

class PciRoot::MmioWindow final : public BusDevice {
public:
    explicit MmioWindow(PciRoot& root) : root_(root) {}
    void read(std::uint64_t offset, std::span<std::uint8_t> data) override {
        std::uint64_t at = 0;
        if (PciFunction* f = owner(offset, data.size(), at)) {
            f->bar0_read(at, data);
        } else {
            std::ranges::fill(data, 0xff);
        }
    }
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) override {
        std::uint64_t at = 0;
        if (PciFunction* f = owner(offset, data.size(), at)) f->bar0_write(at, data);
    }

private:
    // The function whose BAR holds [kMmioBase + offset, +size), if any; the
    // slots are fixed after set-up, so no lock is needed to walk them.
    PciFunction* owner(std::uint64_t offset, std::size_t size, std::uint64_t& at) const {
        const std::uint64_t addr = kMmioBase + offset;
        for (const auto& f : root_.slots_) {
            if (!f) continue;
            const auto w = f->bar0_window();
            if (w.size != 0 && addr >= w.base && addr - w.base < w.size && size <= w.size - (addr - w.base)) {
                at = addr - w.base;
                return f.get();
            }
        }
        return nullptr;
    }
    PciRoot& root_;
};

PciRoot::PciRoot() : bridge_(std::make_shared<HostBridge>()) {
    slots_[0] = bridge_;
    ports_ = std::make_shared<ConfigPorts>(*this);
    window_ = std::make_shared<MmioWindow>(*this);
}

void PciRoot::add(std::uint8_t slot, std::shared_ptr<PciFunction> function) {
    if (slot == 0 || slot >= kMaxSlots || slots_[slot] || !function) {
        throw std::invalid_argument("PciRoot::add: slot taken or out of range");
    }
    slots_[slot] = std::move(function);
}

PciFunction* PciRoot::selected(std::size_t& config_offset) const {
    constexpr std::uint32_t kEnable = 1U << 31;
    if (!(address_ & kEnable)) return nullptr;
    const std::uint32_t bus = (address_ >> 16) & 0xff, slot = (address_ >> 11) & 0x1f,
                        function = (address_ >> 8) & 7;
    if (bus != 0 || function != 0) return nullptr;
    config_offset = address_ & 0xfc;
    return slots_[slot].get();
}

void PciRoot::config_access(std::uint64_t port_offset, std::span<std::uint8_t> read_into,
                            std::span<const std::uint8_t> write_from) {
    const std::size_t size = read_into.empty() ? write_from.size() : read_into.size();
    std::lock_guard lock(mu_);
    if (port_offset < 4) {
        // The address register takes only whole dword accesses (Linux's
        // probe writes a byte to 0xCFB to check that it does not latch).
        if (port_offset != 0 || size != 4) {
            std::ranges::fill(read_into, 0xff);
            return;
        }
        if (!read_into.empty()) {
            std::memcpy(read_into.data(), &address_, 4);
        } else {
            std::memcpy(&address_, write_from.data(), 4);
            address_ &= 0x80fffffcU;  // enable, bus, device, function, register
        }
        return;
    }
    std::size_t offset = 0;
    PciFunction* f = selected(offset);
    const std::uint64_t byte = port_offset - 4;
    if (!f || byte + size > 4) {
        std::ranges::fill(read_into, 0xff);
        return;
    }
    if (!read_into.empty()) {
        f->config_read(offset + byte, read_into);
    } else {
        f->config_write(offset + byte, write_from);
    }
}

std::vector<std::uint8_t> PciRoot::save_state() const {
    ByteWriter w;
    w.u8(kStateVersion);
    {
        std::lock_guard lock(mu_);
        w.u32(address_);
    }
    w.bytes(bridge_->bytes());
    return std::move(w).take();
}

void PciRoot::load_state(std::span<const std::uint8_t> blob) {
    ByteReader r(blob, "pci");
    r.expect_version(kStateVersion);
    const std::uint32_t address = r.u32("address register");
    const auto config = r.bytes(PciConfigSpace::kSize, "host bridge config space");
    r.expect_end();
    if (address & ~0x80fffffcU) r.fail("address register has reserved bits set");
    bridge_->load(config.first<PciConfigSpace::kSize>());
    std::lock_guard lock(mu_);
    address_ = address;
}

}  // namespace forkvm::vmm
