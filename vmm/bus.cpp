#include "vmm/bus.hpp"

#include <algorithm>
#include <spdlog/spdlog.h>
#include <stdexcept>

namespace forkvm::vmm {

void Bus::insert(std::uint64_t base, std::uint64_t length, std::shared_ptr<BusDevice> device,
                 std::string name) {
    if (length == 0 || base + length < base) throw std::invalid_argument(name + ": bad bus range");
    for (const auto& r : ranges_) {
        if (base < r.base + r.length && r.base < base + length)
            throw std::invalid_argument(name + " overlaps " + r.name + " on the " + name_ + " bus");
    }
    ranges_.push_back({base, length, std::move(device), std::move(name)});
    std::sort(ranges_.begin(), ranges_.end(), [](const Range& a, const Range& b) { return a.base < b.base; });
}

const Bus::Range* Bus::find(std::uint64_t addr) const noexcept {
    auto it = std::upper_bound(ranges_.begin(), ranges_.end(), addr,
                               [](std::uint64_t a, const Range& r) { return a < r.base; });
    if (it == ranges_.begin()) return nullptr;
    --it;
    return addr - it->base < it->length ? &*it : nullptr;
}

void Bus::count_unhandled(const char* kind, std::uint64_t addr, std::size_t size) const {
    std::uint64_t n = unhandled_.fetch_add(1) + 1;
    // Debug level: a guest can make these as fast as it likes.
    spdlog::debug("{} bus: unhandled {} of {} bytes at {:#x} (#{})", name_, kind, size, addr, n);
}

bool Bus::read(std::uint64_t addr, std::span<std::uint8_t> data) const {
    if (const Range* r = find(addr)) {
        r->device->read(addr - r->base, data);
        return true;
    }
    std::fill(data.begin(), data.end(), 0xff);
    count_unhandled("read", addr, data.size());
    return false;
}

bool Bus::write(std::uint64_t addr, std::span<const std::uint8_t> data) const {
    if (const Range* r = find(addr)) {
        r->device->write(addr - r->base, data);
        return true;
    }
    count_unhandled("write", addr, data.size());
    return false;
}

}  // namespace forkvm::vmm
