#pragma once
// RAII types for the KVM API: the /dev/kvm system fd, a VM fd and a vCPU fd
// with its shared `struct kvm_run` mapping. Every failure throws SysError
// naming the ioctl ("KVM_CREATE_VM: ...") and errno. The one exception is
// Vcpu::run(), which is on the hot path and returns the errno instead.

#include <linux/kvm.h>

#include <cstdint>
#include <memory>
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
    static Kvm open(const std::string& path = "/dev/kvm");

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

private:
    friend class Vm;
    Vcpu(UniqueFd fd, Mapping run, unsigned id) : fd_(std::move(fd)), run_(std::move(run)), id_(id) {}
    UniqueFd fd_;
    Mapping run_;
    unsigned id_;
};

// The name of a KVM_EXIT_* reason, for logs and errors.
[[nodiscard]] const char* exit_reason_name(std::uint32_t reason) noexcept;

}  // namespace forkvm::vmm
