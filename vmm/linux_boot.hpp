#pragma once
// Loads a bzImage and initramfs into guest memory by the Linux x86 boot
// protocol (Documentation/arch/x86/boot.rst) and puts a vCPU in 64-bit mode
// at the kernel's 64-bit entry point.

#include <cstdint>
#include <stdexcept>
#include <string>

#include "vmm/guest_memory.hpp"
#include "vmm/kvm.hpp"

namespace forkvm::vmm {

class BootError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct BootInfo {
    std::uint64_t entry;        // guest-physical 64-bit entry point
    std::uint64_t boot_params;  // guest-physical address of struct boot_params
    std::uint16_t protocol_version;
    std::uint64_t initrd_addr;
    std::uint64_t initrd_size;
};

// Checks the bzImage's setup header (magic, protocol >= 2.12, 64-bit entry),
// copies the kernel, initramfs, command line, boot_params (with an e820 map
// of `memory`), a GDT and identity page tables into `memory`.
// Throws BootError naming the file and the problem.
BootInfo load_linux(const GuestMemory& memory, const std::string& kernel_path, const std::string& initrd_path,
                    const std::string& cmdline);

// Sets vCPU registers for the 64-bit entry: long mode, paging over the
// identity map, boot GDT selectors, RSI = boot_params, RIP = entry.
void setup_boot_vcpu(const Vcpu& vcpu, const BootInfo& boot);

}  // namespace forkvm::vmm
