#include "vmm/linux_boot.hpp"

#include <asm/bootparam.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fmt/format.h>
#include <vector>

#include "vmm/layout.hpp"
#include "vmm/unique_fd.hpp"

namespace forkvm::vmm {
namespace {

constexpr std::uint32_t kE820Ram = 1;
constexpr std::uint32_t kE820Reserved = 2;
constexpr std::size_t kSetupHeaderOffset = 0x1f1;
constexpr std::uint32_t kHdrsMagic = 0x53726448;  // "HdrS"
constexpr std::uint16_t kMinProtocol = 0x020c;    // 2.12: xloadflags
constexpr std::uint64_t kMaxKernelFile = 512ULL << 20;

struct FileReader {
    UniqueFd fd;
    std::uint64_t size;
};

FileReader open_file(const std::string& path, const char* what) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw BootError(fmt::format("{} {}: {}", what, path, std::strerror(errno)));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
        throw BootError(fmt::format("{} {}: not a regular file", what, path));
    return {std::move(fd), static_cast<std::uint64_t>(st.st_size)};
}

void read_exact(const FileReader& f, std::uint64_t offset, std::span<std::uint8_t> out,
                const std::string& path) {
    std::size_t done = 0;
    while (done < out.size()) {
        ssize_t n =
            ::pread(f.fd.get(), out.data() + done, out.size() - done, static_cast<off_t>(offset + done));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw BootError(fmt::format("{}: read failed at offset {}", path, offset + done));
        done += static_cast<std::size_t>(n);
    }
}

std::span<std::uint8_t> guest_range(const GuestMemory& mem, std::uint64_t gpa, std::uint64_t len,
                                    const char* what) {
    auto s = mem.slice(gpa, len);
    if (!s) {
        throw BootError(fmt::format("{} ({} bytes at {:#x}) does not fit in guest memory ({} MiB)", what, len,
                                    gpa, mem.size() >> 20));
    }
    return *s;
}

void write_page_tables(const GuestMemory& mem) {
    // PML4[0] -> PDPT, PDPT[0] -> PD, PD[i] = 2 MiB identity pages for 1 GiB.
    constexpr std::uint64_t kPresentWrite = 0x3;
    constexpr std::uint64_t kPageSize2M = 0x80;
    auto pml4 = guest_range(mem, layout::kPml4, 4096, "PML4");
    auto pdpt = guest_range(mem, layout::kPdpt, 4096, "PDPT");
    auto pd = guest_range(mem, layout::kPd, 4096, "PD");
    std::fill(pml4.begin(), pml4.end(), 0);
    std::fill(pdpt.begin(), pdpt.end(), 0);
    std::uint64_t e = layout::kPdpt | kPresentWrite;
    std::memcpy(pml4.data(), &e, 8);
    e = layout::kPd | kPresentWrite;
    std::memcpy(pdpt.data(), &e, 8);
    for (std::uint64_t i = 0; i < 512; ++i) {
        e = (i << 21) | kPresentWrite | kPageSize2M;
        std::memcpy(pd.data() + i * 8, &e, 8);
    }
}

// A GDT entry from base/limit/flags, in the hardware layout.
constexpr std::uint64_t gdt_entry(std::uint16_t flags, std::uint32_t base, std::uint32_t limit) {
    return ((static_cast<std::uint64_t>(base) & 0xff000000ULL) << 32) |
           ((static_cast<std::uint64_t>(base) & 0x00ffffffULL) << 16) |
           (static_cast<std::uint64_t>(limit) & 0x0000ffffULL) |
           ((static_cast<std::uint64_t>(limit) & 0x000f0000ULL) << 32) |
           ((static_cast<std::uint64_t>(flags) & 0x0000f0ffULL) << 40);
}

constexpr std::uint64_t kGdt[4] = {
    0, 0, gdt_entry(0xa09b, 0, 0xfffff),  // 0x10: 64-bit code, present, DPL 0
    gdt_entry(0xc093, 0, 0xfffff),        // 0x18: data, present, DPL 0
};

kvm_segment segment_from_gdt(std::uint64_t entry, std::uint16_t selector) {
    kvm_segment s{};
    s.base = static_cast<std::uint64_t>(((entry >> 16) & 0xffffff) | (((entry >> 56) & 0xff) << 24));
    std::uint32_t limit = static_cast<std::uint32_t>((entry & 0xffff) | (((entry >> 48) & 0xf) << 16));
    s.g = static_cast<std::uint8_t>((entry >> 55) & 1);
    s.limit = s.g ? (limit << 12) | 0xfff : limit;
    s.selector = selector;
    s.type = static_cast<std::uint8_t>((entry >> 40) & 0xf);
    s.present = static_cast<std::uint8_t>((entry >> 47) & 1);
    s.dpl = static_cast<std::uint8_t>((entry >> 45) & 3);
    s.db = static_cast<std::uint8_t>((entry >> 54) & 1);
    s.s = static_cast<std::uint8_t>((entry >> 44) & 1);
    s.l = static_cast<std::uint8_t>((entry >> 53) & 1);
    s.avl = static_cast<std::uint8_t>((entry >> 52) & 1);
    s.unusable = s.present ? 0 : 1;
    return s;
}

void add_e820(boot_params& bp, std::uint64_t addr, std::uint64_t size, std::uint32_t type) {
    auto& e = bp.e820_table[bp.e820_entries++];
    e.addr = addr;
    e.size = size;
    e.type = type;
}

}  // namespace

BootInfo load_linux(const GuestMemory& memory, const std::string& kernel_path, const std::string& initrd_path,
                    const std::string& cmdline) {
    FileReader kernel = open_file(kernel_path, "kernel");
    if (kernel.size < 0x1000 || kernel.size > kMaxKernelFile)
        throw BootError(fmt::format("kernel {}: size {} is not that of a bzImage", kernel_path, kernel.size));

    // The setup header, as the boot protocol says: from 0x1f1 to 0x202 + the
    // byte at 0x201 (the jump's offset), at most sizeof(setup_header).
    boot_params bp{};
    std::vector<std::uint8_t> head(0x1000);
    read_exact(kernel, 0, head, kernel_path);
    std::size_t header_end =
        std::min<std::size_t>(0x202 + head[0x201], kSetupHeaderOffset + sizeof(setup_header));
    std::memcpy(&bp.hdr, head.data() + kSetupHeaderOffset, header_end - kSetupHeaderOffset);
    setup_header& hdr = bp.hdr;

    if (hdr.header != kHdrsMagic || hdr.boot_flag != 0xAA55)
        throw BootError(fmt::format("kernel {}: not a bzImage (no HdrS setup header)", kernel_path));
    if (hdr.version < kMinProtocol)
        throw BootError(fmt::format("kernel {}: boot protocol {:#x} is older than 2.12", kernel_path,
                                    static_cast<unsigned>(hdr.version)));
    if ((hdr.xloadflags & XLF_KERNEL_64) == 0)
        throw BootError(fmt::format("kernel {}: no 64-bit entry point (XLF_KERNEL_64 unset)", kernel_path));
    if ((hdr.loadflags & LOADED_HIGH) == 0)
        throw BootError(fmt::format("kernel {}: not loadable at 1 MiB (LOADED_HIGH unset)", kernel_path));

    std::uint64_t setup_sects = hdr.setup_sects == 0 ? 4 : hdr.setup_sects;
    std::uint64_t kernel_offset = (setup_sects + 1) * 512;
    if (kernel_offset >= kernel.size) throw BootError(fmt::format("kernel {}: truncated", kernel_path));
    std::uint64_t kernel_size = kernel.size - kernel_offset;
    // The kernel decompresses itself in place and needs init_size bytes there.
    std::uint64_t need = std::max<std::uint64_t>(kernel_size, hdr.init_size);
    guest_range(memory, layout::kHighMemory, need, "kernel (init_size)");
    read_exact(kernel, kernel_offset, guest_range(memory, layout::kHighMemory, kernel_size, "kernel"),
               kernel_path);

    // Command line.
    std::uint64_t cmdline_max = std::min<std::uint64_t>(hdr.cmdline_size, layout::kCmdlineMax - 1);
    if (cmdline.size() > cmdline_max)
        throw BootError(fmt::format("kernel command line is {} bytes; this kernel takes at most {}",
                                    cmdline.size(), cmdline_max));
    auto cl = guest_range(memory, layout::kCmdline, cmdline.size() + 1, "command line");
    std::memcpy(cl.data(), cmdline.data(), cmdline.size());
    cl[cmdline.size()] = 0;

    // Initramfs: as high as allowed, page-aligned, above the kernel's area.
    FileReader initrd = open_file(initrd_path, "initrd");
    std::uint64_t low_end = memory.regions().front().size;
    std::uint64_t top = std::min<std::uint64_t>(low_end, static_cast<std::uint64_t>(hdr.initrd_addr_max) + 1);
    std::uint64_t kernel_end = layout::kHighMemory + need;
    if (initrd.size == 0 || initrd.size > top || top - initrd.size < kernel_end)
        throw BootError(
            fmt::format("initrd {}: {} bytes do not fit in guest memory below {:#x} after the kernel",
                        initrd_path, initrd.size, top));
    std::uint64_t initrd_addr = (top - initrd.size) & ~0xfffULL;
    read_exact(initrd, 0, guest_range(memory, initrd_addr, initrd.size, "initrd"), initrd_path);

    // boot_params.
    hdr.type_of_loader = 0xff;  // "undefined" loader
    hdr.loadflags = static_cast<std::uint8_t>(hdr.loadflags | CAN_USE_HEAP | KEEP_SEGMENTS);
    hdr.heap_end_ptr = 0xfe00;
    hdr.cmd_line_ptr = static_cast<std::uint32_t>(layout::kCmdline);
    hdr.ramdisk_image = static_cast<std::uint32_t>(initrd_addr);
    hdr.ramdisk_size = static_cast<std::uint32_t>(initrd.size);
    hdr.vid_mode = 0xffff;  // "normal"

    // RAM ends below the mailbox page: reserved, it is readable through the
    // guest's /dev/mem (see layout::kMailbox).
    add_e820(bp, 0, layout::kLowRamEnd, kE820Ram);
    add_e820(bp, layout::kLowRamEnd, layout::kHighMemory - layout::kLowRamEnd, kE820Reserved);
    const auto& regions = memory.regions();
    add_e820(bp, layout::kHighMemory, regions[0].size - layout::kHighMemory, kE820Ram);
    for (std::size_t i = 1; i < regions.size(); ++i)
        add_e820(bp, regions[i].guest_phys, regions[i].size, kE820Ram);

    if (!memory.write_obj(layout::kBootParams, bp)) throw BootError("boot_params do not fit in guest memory");
    if (!memory.write_obj(layout::kGdt, kGdt)) throw BootError("GDT does not fit in guest memory");
    write_page_tables(memory);

    // The 64-bit entry point is 0x200 bytes into the protected-mode kernel.
    return BootInfo{layout::kHighMemory + 0x200, layout::kBootParams, hdr.version, initrd_addr, initrd.size};
}

void setup_boot_vcpu(const Vcpu& vcpu, const BootInfo& boot) {
    kvm_sregs sregs = vcpu.get_sregs();
    sregs.gdt.base = layout::kGdt;
    sregs.gdt.limit = sizeof(kGdt) - 1;
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cs = segment_from_gdt(kGdt[2], layout::kBootCs);
    kvm_segment data = segment_from_gdt(kGdt[3], layout::kBootDs);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;

    constexpr std::uint64_t kCr0Pe = 1ULL << 0, kCr0Et = 1ULL << 4, kCr0Pg = 1ULL << 31;
    constexpr std::uint64_t kCr4Pae = 1ULL << 5;
    constexpr std::uint64_t kEferLme = 1ULL << 8, kEferLma = 1ULL << 10;
    sregs.cr3 = layout::kPml4;
    sregs.cr4 |= kCr4Pae;
    sregs.cr0 |= kCr0Pe | kCr0Et | kCr0Pg;
    sregs.efer |= kEferLme | kEferLma;
    vcpu.set_sregs(sregs);

    kvm_regs regs{};
    regs.rflags = 0x2;
    regs.rip = boot.entry;
    regs.rsi = boot.boot_params;
    vcpu.set_regs(regs);
}

}  // namespace forkvm::vmm
