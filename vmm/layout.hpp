#pragma once
// Where forkvm puts things in guest-physical memory (x86-64 Linux boot).

#include <cstdint>

namespace forkvm::vmm::layout {

constexpr std::uint64_t kGdt = 0x500;            // boot GDT (4 entries)
constexpr std::uint64_t kBootParams = 0x7000;    // the "zero page" (struct boot_params)
constexpr std::uint64_t kPml4 = 0x9000;          // identity page tables: PML4,
constexpr std::uint64_t kPdpt = 0xa000;          //   PDPT,
constexpr std::uint64_t kPd = 0xb000;            //   one PD of 2 MiB pages = first 1 GiB
constexpr std::uint64_t kCmdline = 0x20000;      // kernel command line
constexpr std::uint64_t kCmdlineMax = 0x10000;   // room reserved for it
constexpr std::uint64_t kEbdaStart = 0x9fc00;    // end of usable low memory
constexpr std::uint64_t kHighMemory = 0x100000;  // 1 MiB: the kernel is loaded here
constexpr std::uint64_t kIdentityMapped = 1ULL << 30;

// Intel VMX needs a 3-page TSS and an identity-map page below 4 GiB outside
// RAM; set on every host so no host-specific path goes untested.
constexpr std::uint64_t kIdentityMapAddr = 0xfffbc000;
constexpr std::uint64_t kTssAddr = 0xfffbd000;

// Boot GDT selectors required by the Linux 64-bit boot protocol.
constexpr std::uint16_t kBootCs = 0x10;
constexpr std::uint16_t kBootDs = 0x18;

}  // namespace forkvm::vmm::layout
