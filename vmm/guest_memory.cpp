#include "vmm/guest_memory.hpp"

#include <sys/mman.h>

#include <cstring>
#include <stdexcept>

namespace forkvm::vmm {

GuestMemory GuestMemory::anonymous(std::uint64_t size) {
    if (size == 0 || size % 4096 != 0)
        throw std::invalid_argument("guest memory size must be a multiple of 4 KiB");
    // NORESERVE: pages are only committed when the guest touches them, so a
    // pool of mostly-idle VMs is not refused by overcommit accounting.
    Mapping m = Mapping::map(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0,
                             "mmap guest memory");
    // Debian enables THP "always": khugepaged could collapse (and so un-share)
    // whole 2 MiB ranges of a forked clone. Best effort: failure only costs
    // memory, never correctness.
    (void)::madvise(m.get(), size, MADV_NOHUGEPAGE);
    std::vector<MemoryRegion> regions;
    std::uint64_t low = std::min(size, kLowMemEnd);
    regions.push_back({0, low, 0});
    if (size > low) regions.push_back({kHighMemStart, size - low, low});
    return GuestMemory(std::move(m), std::move(regions));
}

std::uint64_t GuestMemory::end() const noexcept {
    const auto& last = regions_.back();
    return last.guest_phys + last.size;
}

std::optional<std::span<std::uint8_t>> GuestMemory::slice(std::uint64_t gpa,
                                                          std::uint64_t len) const noexcept {
    for (const auto& r : regions_) {
        if (gpa < r.guest_phys || gpa - r.guest_phys >= r.size) continue;
        std::uint64_t offset = gpa - r.guest_phys;
        if (len > r.size - offset) return std::nullopt;  // runs off the region (no overflow: offset < size)
        return std::span<std::uint8_t>(mapping_.bytes() + r.host_offset + offset, len);
    }
    if (len == 0) return std::span<std::uint8_t>();
    return std::nullopt;
}

bool GuestMemory::write(std::uint64_t gpa, std::span<const std::uint8_t> data) const noexcept {
    auto dst = slice(gpa, data.size());
    if (!dst) return false;
    if (!data.empty()) std::memcpy(dst->data(), data.data(), data.size());
    return true;
}

bool GuestMemory::read(std::uint64_t gpa, std::span<std::uint8_t> out) const noexcept {
    auto src = slice(gpa, out.size());
    if (!src) return false;
    if (!out.empty()) std::memcpy(out.data(), src->data(), out.size());
    return true;
}

}  // namespace forkvm::vmm
