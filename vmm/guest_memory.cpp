#include "vmm/guest_memory.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "vmm/sys_error.hpp"

namespace forkvm::vmm {

namespace {

void check_size(std::uint64_t size) {
    if (size == 0 || size % 4096 != 0)
        throw std::invalid_argument("guest memory size must be a multiple of 4 KiB");
}

}  // namespace

// Both kinds are MAP_PRIVATE and never MADV_DONTFORK, so a fork() of the VM
// process shares every page copy-on-write. NORESERVE: pages are only
// committed when written, so a pool of mostly-idle VMs is not refused by
// overcommit accounting.
GuestMemory GuestMemory::anonymous(std::uint64_t size) {
    check_size(size);
    return from_mapping(Mapping::map(size, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0,
                                     "mmap guest memory"));
}

GuestMemory GuestMemory::map_file(int fd, std::uint64_t size) {
    check_size(size);
    return from_mapping(Mapping::map(size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0,
                                     "mmap guest memory file"));
}

GuestMemory GuestMemory::from_mapping(Mapping m) {
    const std::uint64_t size = m.size();
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

void GuestMemory::write_image(int fd, const std::string& path) const {
    constexpr std::size_t kPage = 4096;
    static const std::array<std::uint8_t, kPage> kZero{};
    const std::uint8_t* base = mapping_.bytes();
    const std::size_t size = mapping_.size();
    auto write_run = [&](std::size_t begin, std::size_t end) {
        while (begin < end) {
            ssize_t n = ::pwrite(fd, base + begin, end - begin, static_cast<off_t>(begin));
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) throw SysError("write " + path, n < 0 ? errno : EIO);
            begin += static_cast<std::size_t>(n);
        }
    };
    std::size_t run = size;  // start of the current run of non-zero pages
    for (std::size_t off = 0; off < size; off += kPage) {
        const bool zero = std::memcmp(base + off, kZero.data(), kPage) == 0;
        if (!zero && run == size) run = off;
        if (zero && run != size) {
            write_run(run, off);
            run = size;
        }
    }
    if (run != size) write_run(run, size);
    if (::ftruncate(fd, static_cast<off_t>(size)) != 0) throw SysError("ftruncate " + path, errno);
    if (::fsync(fd) != 0) throw SysError("fsync " + path, errno);
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
