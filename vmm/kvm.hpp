#pragma once
// RAII types for the KVM API: the /dev/kvm system fd, a VM fd and a vCPU fd
// with its shared `struct kvm_run` mapping. Every failure throws SysError
// naming the ioctl ("KVM_CREATE_VM: ...") and errno. The one exception is
// Vcpu::run(), which is on the hot path and returns the errno instead.

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "vmm/mapping.hpp"
#include "vmm/unique_fd.hpp"

namespace forkvm::vmm {

class Vm;
class Vcpu;

// struct kvm_cpuid2 with its entries, owned.
struct CpuidEntries {
    std::vector<kvm_cpuid_entry2> entries;
};

class Kvm {
public:
    // Opens the KVM device and checks the stable API version (12).
    static Kvm open(const std::string& path);
    // The device this process was given (use_device), else /dev/kvm.
    static Kvm open();
    // A VM process whose controller dropped root (server.user) may not open
    // /dev/kvm itself: the controller opens it and passes the fd, which
    // every later open() duplicates. Call once, before any open().
    static void use_device(UniqueFd device);

    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    [[nodiscard]] int api_version() const;
    // KVM_CHECK_EXTENSION: 0 when unsupported, else a capability-specific value.
    [[nodiscard]] int check_extension(long capability) const;
    [[nodiscard]] std::size_t vcpu_mmap_size() const;
    [[nodiscard]] CpuidEntries supported_cpuid() const;
    [[nodiscard]] std::vector<std::uint32_t> msr_index_list() const;

    [[nodiscard]] Vm create_vm() const;

private:
    explicit Kvm(UniqueFd fd) : fd_(std::move(fd)) {}
    UniqueFd fd_;
};

class Vm {
public:
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }

    // Maps host memory [host_addr, host_addr+size) at guest physical address
    // guest_phys in memory slot `slot`.
    void set_user_memory_region(std::uint32_t slot, std::uint64_t guest_phys, std::uint64_t size,
                                void* host_addr, std::uint32_t flags = 0) const;
    // Intel VMX needs these two pages reserved below 4 GiB; they are set on
    // every host (AMD ignores them) so no host-specific path goes untested.
    void set_tss_addr(std::uint64_t addr) const;
    void set_identity_map_addr(std::uint64_t addr) const;
    void create_irqchip() const;
    void create_pit2() const;
    void irq_line(std::uint32_t irq, bool level) const;

    // KVM_CHECK_EXTENSION on the VM fd: some answers are per VM (e.g. the
    // KVM_CAP_XSAVE2 size). 0 when unsupported.
    [[nodiscard]] int check_extension(long capability) const;

    // In-kernel PIC/IOAPIC (chip_id KVM_IRQCHIP_PIC_MASTER, _PIC_SLAVE,
    // _IOAPIC), PIT and kvmclock state. Need create_irqchip()/create_pit2().
    [[nodiscard]] kvm_irqchip get_irqchip(std::uint32_t chip_id) const;
    void set_irqchip(const kvm_irqchip& chip) const;
    [[nodiscard]] kvm_pit_state2 get_pit2() const;
    void set_pit2(const kvm_pit_state2& pit) const;
    [[nodiscard]] kvm_clock_data get_clock() const;
    void set_clock(const kvm_clock_data& clock) const;

    [[nodiscard]] Vcpu create_vcpu(unsigned id) const;

private:
    friend class Kvm;
    Vm(UniqueFd fd, std::size_t vcpu_mmap_size) : fd_(std::move(fd)), vcpu_mmap_size_(vcpu_mmap_size) {}
    UniqueFd fd_;
    std::size_t vcpu_mmap_size_;
};

class Vcpu {
public:
    [[nodiscard]] int fd() const noexcept { return fd_.get(); }
    [[nodiscard]] unsigned id() const noexcept { return id_; }
    [[nodiscard]] kvm_run& run_state() const noexcept { return *static_cast<kvm_run*>(run_.get()); }

    // KVM_RUN once. Returns 0 on a VM exit (see run_state().exit_reason) or
    // the errno: EINTR when a signal or immediate_exit interrupted it.
    [[nodiscard]] int run() const noexcept;

    // The bytes of the pending KVM_EXIT_IO (size * count bytes in kvm_run).
    [[nodiscard]] std::uint8_t* io_data() const noexcept;

    [[nodiscard]] kvm_regs get_regs() const;
    void set_regs(const kvm_regs& regs) const;
    [[nodiscard]] kvm_sregs get_sregs() const;
    void set_sregs(const kvm_sregs& sregs) const;
    void set_cpuid(const CpuidEntries& cpuid) const;
    [[nodiscard]] kvm_lapic_state get_lapic() const;
    void set_lapic(const kvm_lapic_state& lapic) const;
    void set_fpu(const kvm_fpu& fpu) const;
    [[nodiscard]] kvm_fpu get_fpu() const;
    // KVM_GET_CPUID2: the CPUID entries set on this vCPU.
    [[nodiscard]] CpuidEntries get_cpuid() const;

    [[nodiscard]] kvm_mp_state get_mp_state() const;
    void set_mp_state(const kvm_mp_state& state) const;

    // The XSAVE area: xsave_size() bytes (4096, or the VM's KVM_CAP_XSAVE2
    // size when larger, e.g. with AMX). Read with KVM_GET_XSAVE2 when larger
    // than 4096, else KVM_GET_XSAVE. set_xsave() refuses (invalid_argument)
    // any other size: KVM reads exactly xsave_size() bytes from the buffer.
    [[nodiscard]] std::size_t xsave_size() const noexcept { return xsave_size_; }
    [[nodiscard]] std::vector<std::uint8_t> get_xsave() const;
    void set_xsave(std::span<const std::uint8_t> xsave) const;

    [[nodiscard]] kvm_xcrs get_xcrs() const;
    void set_xcrs(const kvm_xcrs& xcrs) const;
    [[nodiscard]] kvm_debugregs get_debugregs() const;
    void set_debugregs(const kvm_debugregs& regs) const;
    [[nodiscard]] kvm_vcpu_events get_vcpu_events() const;
    void set_vcpu_events(const kvm_vcpu_events& events) const;

    // KVM_GET_MSRS for `indices`, in that order. KVM stops at the first MSR
    // it cannot read; a short count throws SysError("KVM_GET_MSRS: MSR 0x...
    // ...", EINVAL) naming that MSR.
    [[nodiscard]] std::vector<kvm_msr_entry> get_msrs(std::span<const std::uint32_t> indices) const;
    // The raw ioctl: reads entries[i].data for entries[i].index until the
    // first failure; returns how many were read (never throws for a short count).
    [[nodiscard]] std::size_t read_msrs(std::span<kvm_msr_entry> entries) const;
    // KVM_SET_MSRS in the given order; a short count throws like get_msrs().
    void set_msrs(std::span<const kvm_msr_entry> entries) const;

    // KVM_GET_TSC_KHZ / KVM_SET_TSC_KHZ: the guest's TSC frequency.
    [[nodiscard]] std::uint32_t get_tsc_khz() const;
    void set_tsc_khz(std::uint32_t khz) const;

private:
    friend class Vm;
    Vcpu(UniqueFd fd, Mapping run, unsigned id, std::size_t xsave_size)
        : fd_(std::move(fd)), run_(std::move(run)), id_(id), xsave_size_(xsave_size) {}
    UniqueFd fd_;
    Mapping run_;
    unsigned id_;
    std::size_t xsave_size_;
};

// The name of a KVM_EXIT_* reason, for logs and errors.
[[nodiscard]] const char* exit_reason_name(std::uint32_t reason) noexcept;

}  // namespace forkvm::vmm
