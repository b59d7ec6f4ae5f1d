#include "vmm/kvm.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <stdexcept>

#include "vmm/kvm_abi.hpp"
#include "vmm/sys_error.hpp"

namespace forkvm::vmm {
namespace {

// ioctl() that retries when a signal interrupts it, and throws SysError
// naming the request on failure. (KVM_RUN does not go through here: its
// EINTR is a result, not a failure.)
template <typename Arg>
int xioctl(int fd, unsigned long request, Arg arg, const char* name) {
    for (;;) {
        int r = ::ioctl(fd, request, arg);
        if (r >= 0) return r;
        if (errno != EINTR) throw SysError(name, errno);
    }
}

int xioctl(int fd, unsigned long request, const char* name) { return xioctl(fd, request, 0UL, name); }

// A variable-length KVM struct in its C layout: a `prefix`-byte header whose
// first u32 is the entry count, then the entries. (The C++ view of these
// structs in linux-libc-dev is wrong: see kvm_abi.hpp. So no member of
// kvm_cpuid2 / kvm_msr_list is touched through the header's struct type.)
template <typename Entry>
class FlexBuffer {
public:
    FlexBuffer(std::size_t prefix, std::uint32_t count)
        : prefix_(prefix), storage_(prefix + count * sizeof(Entry)) {
        set_count(count);
    }
    void* data() noexcept { return storage_.data(); }
    [[nodiscard]] std::uint32_t count() const noexcept {
        std::uint32_t n = 0;
        std::memcpy(&n, storage_.data(), sizeof n);
        return n;
    }
    void set_count(std::uint32_t n) noexcept { std::memcpy(storage_.data(), &n, sizeof n); }
    // Copies out min(count(), capacity) entries.
    [[nodiscard]] std::vector<Entry> entries() const {
        std::size_t n = std::min<std::size_t>(count(), capacity());
        std::vector<Entry> out(n);
        if (n > 0) std::memcpy(out.data(), storage_.data() + prefix_, n * sizeof(Entry));
        return out;
    }
    void set_entries(const std::vector<Entry>& in) noexcept {
        std::memcpy(storage_.data() + prefix_, in.data(), std::min(in.size(), capacity()) * sizeof(Entry));
    }

private:
    [[nodiscard]] std::size_t capacity() const noexcept {
        return (storage_.size() - prefix_) / sizeof(Entry);
    }
    std::size_t prefix_;
    std::vector<std::uint8_t> storage_;
};

// The error for a short KVM_GET_MSRS / KVM_SET_MSRS count: KVM stops at the
// first MSR it refuses, so entry `done` is the culprit.
[[noreturn]] void throw_short_msr_count(const char* name, std::span<const kvm_msr_entry> entries,
                                        std::size_t done) {
    throw SysError(fmt::format("{}: MSR {:#x} (entry {} of {}) refused", name,
                               done < entries.size() ? entries[done].index : 0U, done, entries.size()),
                   EINVAL);
}

// The fd given by use_device(); -1 = open /dev/kvm by path.
int given_device = -1;

Kvm checked(Kvm kvm) {
    int version = kvm.api_version();
    // Any other version is an ABI this code was not written for.
    if (version != KVM_API_VERSION) throw SysError("KVM_GET_API_VERSION (unsupported version)", EPROTO);
    return kvm;
}

}  // namespace

Kvm Kvm::open(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) throw SysError("open " + path, errno);
    return checked(Kvm{UniqueFd(fd)});
}

Kvm Kvm::open() {
    if (given_device < 0) return open("/dev/kvm");
    int fd = ::fcntl(given_device, F_DUPFD_CLOEXEC, 0);
    if (fd < 0) throw SysError("dup the KVM device fd", errno);
    return checked(Kvm{UniqueFd(fd)});
}

void Kvm::use_device(UniqueFd device) { given_device = device.release(); }

int Kvm::api_version() const { return xioctl(fd(), KVM_GET_API_VERSION, "KVM_GET_API_VERSION"); }

int Kvm::check_extension(long capability) const {
    return xioctl(fd(), KVM_CHECK_EXTENSION, capability, "KVM_CHECK_EXTENSION");
}

std::size_t Kvm::vcpu_mmap_size() const {
    return static_cast<std::size_t>(xioctl(fd(), KVM_GET_VCPU_MMAP_SIZE, "KVM_GET_VCPU_MMAP_SIZE"));
}

CpuidEntries Kvm::supported_cpuid() const {
    for (std::uint32_t n = 128;; n *= 2) {
        FlexBuffer<kvm_cpuid_entry2> buf(abi::kCpuid2Size, n);
        int r = ::ioctl(fd(), abi::kGetSupportedCpuid, buf.data());
        if (r < 0 && errno == E2BIG && n < 4096) continue;
        if (r < 0) throw SysError("KVM_GET_SUPPORTED_CPUID", errno);
        return CpuidEntries{buf.entries()};
    }
}

std::vector<std::uint32_t> Kvm::msr_index_list() const {
    // The first call fails with E2BIG and reports the count.
    FlexBuffer<std::uint32_t> probe(abi::kMsrListSize, 0);
    if (::ioctl(fd(), abi::kGetMsrIndexList, probe.data()) < 0 && errno != E2BIG)
        throw SysError("KVM_GET_MSR_INDEX_LIST", errno);
    FlexBuffer<std::uint32_t> buf(abi::kMsrListSize, probe.count());
    xioctl(fd(), abi::kGetMsrIndexList, buf.data(), "KVM_GET_MSR_INDEX_LIST");
    return buf.entries();
}

Vm Kvm::create_vm() const {
    int vm = xioctl(fd(), KVM_CREATE_VM, 0UL, "KVM_CREATE_VM");
    return Vm(UniqueFd(vm), vcpu_mmap_size());
}

void Vm::set_user_memory_region(std::uint32_t slot, std::uint64_t guest_phys, std::uint64_t size,
                                void* host_addr, std::uint32_t flags) const {
    kvm_userspace_memory_region region{};
    region.slot = slot;
    region.flags = flags;
    region.guest_phys_addr = guest_phys;
    region.memory_size = size;
    region.userspace_addr = reinterpret_cast<std::uint64_t>(host_addr);
    xioctl(fd(), KVM_SET_USER_MEMORY_REGION, &region, "KVM_SET_USER_MEMORY_REGION");
}

void Vm::set_tss_addr(std::uint64_t addr) const {
    xioctl(fd(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(addr), "KVM_SET_TSS_ADDR");
}

void Vm::set_identity_map_addr(std::uint64_t addr) const {
    std::uint64_t a = addr;
    xioctl(fd(), KVM_SET_IDENTITY_MAP_ADDR, &a, "KVM_SET_IDENTITY_MAP_ADDR");
}

void Vm::create_irqchip() const { xioctl(fd(), KVM_CREATE_IRQCHIP, "KVM_CREATE_IRQCHIP"); }

void Vm::create_pit2() const {
    kvm_pit_config config{};
    config.flags = KVM_PIT_SPEAKER_DUMMY;
    xioctl(fd(), KVM_CREATE_PIT2, &config, "KVM_CREATE_PIT2");
}

void Vm::irq_line(std::uint32_t irq, bool level) const {
    kvm_irq_level line{};
    line.irq = irq;
    line.level = level ? 1U : 0U;
    xioctl(fd(), KVM_IRQ_LINE, &line, "KVM_IRQ_LINE");
}

int Vm::check_extension(long capability) const {
    return xioctl(fd(), KVM_CHECK_EXTENSION, capability, "KVM_CHECK_EXTENSION (VM)");
}

kvm_irqchip Vm::get_irqchip(std::uint32_t chip_id) const {
    kvm_irqchip chip{};
    chip.chip_id = chip_id;
    xioctl(fd(), KVM_GET_IRQCHIP, &chip, "KVM_GET_IRQCHIP");
    return chip;
}

void Vm::set_irqchip(const kvm_irqchip& chip) const {
    xioctl(fd(), KVM_SET_IRQCHIP, &chip, "KVM_SET_IRQCHIP");
}

kvm_pit_state2 Vm::get_pit2() const {
    kvm_pit_state2 pit{};
    xioctl(fd(), KVM_GET_PIT2, &pit, "KVM_GET_PIT2");
    return pit;
}

void Vm::set_pit2(const kvm_pit_state2& pit) const { xioctl(fd(), KVM_SET_PIT2, &pit, "KVM_SET_PIT2"); }

kvm_clock_data Vm::get_clock() const {
    kvm_clock_data clock{};
    xioctl(fd(), KVM_GET_CLOCK, &clock, "KVM_GET_CLOCK");
    return clock;
}

void Vm::set_clock(const kvm_clock_data& clock) const {
    xioctl(fd(), KVM_SET_CLOCK, &clock, "KVM_SET_CLOCK");
}

Vcpu Vm::create_vcpu(unsigned id) const {
    // The vCPU's XSAVE buffer size is fixed when it is created; ask the VM
    // (the answer depends on the process's XSTATE permissions, e.g. AMX).
    int xsave2 = check_extension(KVM_CAP_XSAVE2);
    std::size_t xsave_size = xsave2 > static_cast<int>(abi::kXsaveSize) ? static_cast<std::size_t>(xsave2)
                                                                        : std::size_t{abi::kXsaveSize};
    int vcpu = xioctl(fd(), KVM_CREATE_VCPU, static_cast<unsigned long>(id), "KVM_CREATE_VCPU");
    UniqueFd vcpu_fd(vcpu);
    Mapping run =
        Mapping::map(vcpu_mmap_size_, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu_fd.get(), 0, "mmap kvm_run");
    return Vcpu(std::move(vcpu_fd), std::move(run), id, xsave_size);
}

int Vcpu::run() const noexcept {
    if (::ioctl(fd(), KVM_RUN, 0UL) < 0) return errno;
    return 0;
}

std::uint8_t* Vcpu::io_data() const noexcept { return run_.bytes() + run_state().io.data_offset; }

kvm_regs Vcpu::get_regs() const {
    kvm_regs regs{};
    xioctl(fd(), KVM_GET_REGS, &regs, "KVM_GET_REGS");
    return regs;
}

void Vcpu::set_regs(const kvm_regs& regs) const { xioctl(fd(), KVM_SET_REGS, &regs, "KVM_SET_REGS"); }

kvm_sregs Vcpu::get_sregs() const {
    kvm_sregs sregs{};
    xioctl(fd(), KVM_GET_SREGS, &sregs, "KVM_GET_SREGS");
    return sregs;
}

void Vcpu::set_sregs(const kvm_sregs& sregs) const { xioctl(fd(), KVM_SET_SREGS, &sregs, "KVM_SET_SREGS"); }

void Vcpu::set_cpuid(const CpuidEntries& cpuid) const {
    FlexBuffer<kvm_cpuid_entry2> buf(abi::kCpuid2Size, static_cast<std::uint32_t>(cpuid.entries.size()));
    buf.set_entries(cpuid.entries);
    xioctl(fd(), abi::kSetCpuid2, buf.data(), "KVM_SET_CPUID2");
}

kvm_lapic_state Vcpu::get_lapic() const {
    kvm_lapic_state lapic{};
    xioctl(fd(), KVM_GET_LAPIC, &lapic, "KVM_GET_LAPIC");
    return lapic;
}

void Vcpu::set_lapic(const kvm_lapic_state& lapic) const {
    xioctl(fd(), KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC");
}

void Vcpu::set_fpu(const kvm_fpu& fpu) const { xioctl(fd(), KVM_SET_FPU, &fpu, "KVM_SET_FPU"); }

kvm_fpu Vcpu::get_fpu() const {
    kvm_fpu fpu{};
    xioctl(fd(), KVM_GET_FPU, &fpu, "KVM_GET_FPU");
    return fpu;
}

CpuidEntries Vcpu::get_cpuid() const {
    // KVM answers E2BIG when the buffer is smaller than the vCPU's table.
    for (std::uint32_t n = 128;; n *= 2) {
        FlexBuffer<kvm_cpuid_entry2> buf(abi::kCpuid2Size, n);
        int r = ::ioctl(fd(), abi::kGetCpuid2, buf.data());
        if (r < 0 && errno == E2BIG && n < 4096) continue;
        if (r < 0) throw SysError("KVM_GET_CPUID2", errno);
        return CpuidEntries{buf.entries()};
    }
}

kvm_mp_state Vcpu::get_mp_state() const {
    kvm_mp_state state{};
    xioctl(fd(), KVM_GET_MP_STATE, &state, "KVM_GET_MP_STATE");
    return state;
}

void Vcpu::set_mp_state(const kvm_mp_state& state) const {
    xioctl(fd(), KVM_SET_MP_STATE, &state, "KVM_SET_MP_STATE");
}

std::vector<std::uint8_t> Vcpu::get_xsave() const {
    std::vector<std::uint8_t> xsave(xsave_size_);
    if (xsave_size_ > abi::kXsaveSize) {
        xioctl(fd(), abi::kGetXsave2, xsave.data(), "KVM_GET_XSAVE2");
    } else {
        xioctl(fd(), abi::kGetXsave, xsave.data(), "KVM_GET_XSAVE");
    }
    return xsave;
}

void Vcpu::set_xsave(std::span<const std::uint8_t> xsave) const {
    if (xsave.size() != xsave_size_) {
        throw std::invalid_argument(fmt::format(
            "KVM_SET_XSAVE: buffer of {} bytes, this vCPU's XSAVE area is {}", xsave.size(), xsave_size_));
    }
    xioctl(fd(), abi::kSetXsave, xsave.data(), "KVM_SET_XSAVE");
}

kvm_xcrs Vcpu::get_xcrs() const {
    kvm_xcrs xcrs{};
    xioctl(fd(), KVM_GET_XCRS, &xcrs, "KVM_GET_XCRS");
    return xcrs;
}

void Vcpu::set_xcrs(const kvm_xcrs& xcrs) const { xioctl(fd(), KVM_SET_XCRS, &xcrs, "KVM_SET_XCRS"); }

kvm_debugregs Vcpu::get_debugregs() const {
    kvm_debugregs regs{};
    xioctl(fd(), KVM_GET_DEBUGREGS, &regs, "KVM_GET_DEBUGREGS");
    return regs;
}

void Vcpu::set_debugregs(const kvm_debugregs& regs) const {
    xioctl(fd(), KVM_SET_DEBUGREGS, &regs, "KVM_SET_DEBUGREGS");
}

kvm_vcpu_events Vcpu::get_vcpu_events() const {
    kvm_vcpu_events events{};
    xioctl(fd(), KVM_GET_VCPU_EVENTS, &events, "KVM_GET_VCPU_EVENTS");
    return events;
}

void Vcpu::set_vcpu_events(const kvm_vcpu_events& events) const {
    xioctl(fd(), KVM_SET_VCPU_EVENTS, &events, "KVM_SET_VCPU_EVENTS");
}

std::size_t Vcpu::read_msrs(std::span<kvm_msr_entry> entries) const {
    FlexBuffer<kvm_msr_entry> buf(abi::kMsrsSize, static_cast<std::uint32_t>(entries.size()));
    buf.set_entries(std::vector<kvm_msr_entry>(entries.begin(), entries.end()));
    int r = xioctl(fd(), abi::kGetMsrs, buf.data(), "KVM_GET_MSRS");
    auto read = buf.entries();
    auto done = std::min(static_cast<std::size_t>(r), entries.size());
    std::copy_n(read.begin(), done, entries.begin());
    return done;
}

std::vector<kvm_msr_entry> Vcpu::get_msrs(std::span<const std::uint32_t> indices) const {
    std::vector<kvm_msr_entry> entries(indices.size());
    for (std::size_t i = 0; i < indices.size(); ++i) entries[i].index = indices[i];
    std::size_t done = read_msrs(entries);
    if (done != entries.size()) throw_short_msr_count("KVM_GET_MSRS", entries, done);
    return entries;
}

void Vcpu::set_msrs(std::span<const kvm_msr_entry> entries) const {
    FlexBuffer<kvm_msr_entry> buf(abi::kMsrsSize, static_cast<std::uint32_t>(entries.size()));
    buf.set_entries(std::vector<kvm_msr_entry>(entries.begin(), entries.end()));
    int r = xioctl(fd(), abi::kSetMsrs, buf.data(), "KVM_SET_MSRS");
    if (static_cast<std::size_t>(r) != entries.size())
        throw_short_msr_count("KVM_SET_MSRS", entries, static_cast<std::size_t>(r));
}

std::uint32_t Vcpu::get_tsc_khz() const {
    return static_cast<std::uint32_t>(xioctl(fd(), KVM_GET_TSC_KHZ, "KVM_GET_TSC_KHZ"));
}

void Vcpu::set_tsc_khz(std::uint32_t khz) const {
    xioctl(fd(), KVM_SET_TSC_KHZ, static_cast<unsigned long>(khz), "KVM_SET_TSC_KHZ");
}

const char* exit_reason_name(std::uint32_t reason) noexcept {
    switch (reason) {
        case KVM_EXIT_UNKNOWN: return "KVM_EXIT_UNKNOWN";
        case KVM_EXIT_EXCEPTION: return "KVM_EXIT_EXCEPTION";
        case KVM_EXIT_IO: return "KVM_EXIT_IO";
        case KVM_EXIT_HYPERCALL: return "KVM_EXIT_HYPERCALL";
        case KVM_EXIT_DEBUG: return "KVM_EXIT_DEBUG";
        case KVM_EXIT_HLT: return "KVM_EXIT_HLT";
        case KVM_EXIT_MMIO: return "KVM_EXIT_MMIO";
        case KVM_EXIT_IRQ_WINDOW_OPEN: return "KVM_EXIT_IRQ_WINDOW_OPEN";
        case KVM_EXIT_SHUTDOWN: return "KVM_EXIT_SHUTDOWN";
        case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
        case KVM_EXIT_INTR: return "KVM_EXIT_INTR";
        case KVM_EXIT_SET_TPR: return "KVM_EXIT_SET_TPR";
        case KVM_EXIT_TPR_ACCESS: return "KVM_EXIT_TPR_ACCESS";
        case KVM_EXIT_NMI: return "KVM_EXIT_NMI";
        case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
        case KVM_EXIT_SYSTEM_EVENT: return "KVM_EXIT_SYSTEM_EVENT";
        default: return "KVM_EXIT_(unnamed)";
    }
}

}  // namespace forkvm::vmm
