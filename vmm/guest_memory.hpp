#pragma once
// Guest RAM: one private host mapping (MAP_PRIVATE so a fork() of the VM
// process shares it copy-on-write), laid out as up to two guest-physical
// regions: [0, 3 GiB) and, for larger VMs, [4 GiB, ...), leaving the 32-bit
// hole below 4 GiB for device MMIO. Every access from device or loader code
// goes through a bounds-checked slice.

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/mapping.hpp"

namespace forkvm::vmm {

struct MemoryRegion {
    std::uint64_t guest_phys;
    std::uint64_t size;
    std::uint64_t host_offset;  // into the mapping
};

class GuestMemory {
public:
    static constexpr std::uint64_t kLowMemEnd = 3ULL << 30;     // 3 GiB
    static constexpr std::uint64_t kHighMemStart = 4ULL << 30;  // 4 GiB

    // Anonymous private memory of `size` bytes (a multiple of 4 KiB).
    static GuestMemory anonymous(std::uint64_t size);
    // A private (copy-on-write) mapping of the first `size` bytes of `fd`
    // (a snapshot's memory.bin, whose size the caller has checked: a page
    // past EOF would SIGBUS on touch). Pages come from the page cache, shared
    // with every other mapping of the file until written.
    static GuestMemory map_file(int fd, std::uint64_t size);

    [[nodiscard]] std::uint64_t size() const noexcept { return mapping_.size(); }
    [[nodiscard]] const std::vector<MemoryRegion>& regions() const noexcept { return regions_; }
    [[nodiscard]] std::uint8_t* host_base() const noexcept { return mapping_.bytes(); }
    // The highest guest-physical address + 1 that is RAM.
    [[nodiscard]] std::uint64_t end() const noexcept;

    // The host bytes behind guest range [gpa, gpa+len), or nullopt when any
    // part of it is not RAM or the range crosses a region boundary.
    [[nodiscard]] std::optional<std::span<std::uint8_t>> slice(std::uint64_t gpa,
                                                               std::uint64_t len) const noexcept;

    // Writes all of guest RAM to `fd` (a new, empty regular file), byte i of
    // the file = byte i of the mapping, and fsyncs it. All-zero pages become
    // holes: the file is sparse, never read for them, and the page cache
    // shares one zero page among all clones. Throws SysError naming `path`.
    void write_image(int fd, const std::string& path) const;

    // Copy in/out; false when the range is not entirely RAM.
    [[nodiscard]] bool write(std::uint64_t gpa, std::span<const std::uint8_t> data) const noexcept;
    [[nodiscard]] bool read(std::uint64_t gpa, std::span<std::uint8_t> out) const noexcept;

    template <typename T>
    [[nodiscard]] bool write_obj(std::uint64_t gpa, const T& value) const noexcept {
        return write(gpa, std::span(reinterpret_cast<const std::uint8_t*>(&value), sizeof(T)));
    }

private:
    static GuestMemory from_mapping(Mapping mapping);
    GuestMemory(Mapping mapping, std::vector<MemoryRegion> regions)
        : mapping_(std::move(mapping)), regions_(std::move(regions)) {}
    Mapping mapping_;
    std::vector<MemoryRegion> regions_;
};

}  // namespace forkvm::vmm
