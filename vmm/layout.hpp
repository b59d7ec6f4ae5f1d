#pragma once
// Where forkvm puts things in guest-physical memory (x86-64 Linux boot).

#include <cstdint>

namespace forkvm::vmm::layout {

constexpr std::uint64_t kGdt = 0x500;           // boot GDT (4 entries)
constexpr std::uint64_t kBootParams = 0x7000;   // the "zero page" (struct boot_params)
constexpr std::uint64_t kPml4 = 0x9000;         // identity page tables: PML4,
constexpr std::uint64_t kPdpt = 0xa000;         //   PDPT,
constexpr std::uint64_t kPd = 0xb000;           //   one PD of 2 MiB pages = first 1 GiB
constexpr std::uint64_t kCmdline = 0x20000;     // kernel command line
constexpr std::uint64_t kCmdlineMax = 0x10000;  // room reserved for it
// Clone-hygiene mailbox (guest/protocol/mailbox.hpp): one page the host
// fills while the VM is paused and the agent reads through /dev/mem. The
// e820 map ends low RAM here and reserves [kMailbox, 1 MiB), so the page is
// not "System RAM" to the guest and CONFIG_STRICT_DEVMEM lets root read it
// (docs/agent-protocol.md, "Mailbox page"). Linux never used it as RAM
// anyway: it reserves [0x9f000 (BIOS_START_MAX), 1 MiB) for the BIOS when the
// BDA names no EBDA, as here.
constexpr std::uint64_t kMailbox = 0x9f000;
constexpr std::uint64_t kMailboxSize = 0x1000;
constexpr std::uint64_t kLowRamEnd = kMailbox;   // end of usable low memory (e820 RAM)
constexpr std::uint64_t kHighMemory = 0x100000;  // 1 MiB: the kernel is loaded here
constexpr std::uint64_t kIdentityMapped = 1ULL << 30;

// Intel VMX needs a 3-page TSS and an identity-map page below 4 GiB outside
// RAM; set on every host so no host-specific path goes untested.
constexpr std::uint64_t kIdentityMapAddr = 0xfffbc000;
constexpr std::uint64_t kTssAddr = 0xfffbd000;

// Nothing forkvm writes at boot may share the mailbox page, and all of it
// must sit in low RAM below the page.
static_assert(kMailboxSize == 0x1000 && kMailbox % kMailboxSize == 0);
static_assert(kGdt + 4 * 8 <= kBootParams && kBootParams + 0x1000 <= kPml4);
static_assert(kPml4 + 0x1000 <= kPdpt && kPdpt + 0x1000 <= kPd && kPd + 0x1000 <= kCmdline);
static_assert(kCmdline + kCmdlineMax <= kLowRamEnd);
static_assert(kMailbox + kMailboxSize <= kHighMemory);

// Boot GDT selectors required by the Linux 64-bit boot protocol.
constexpr std::uint16_t kBootCs = 0x10;
constexpr std::uint16_t kBootDs = 0x18;

}  // namespace forkvm::vmm::layout
