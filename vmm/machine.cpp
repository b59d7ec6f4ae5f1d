#include "vmm/machine.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <stdexcept>

#include "vmm/layout.hpp"
#include "vmm/sys_error.hpp"
#include "vmm/vm_state.hpp"

namespace forkvm::vmm {
namespace {

// CPUID as KVM supports it, with the hypervisor bit set, SVM and VMX hidden (nested state is not
// snapshotted, so a guest must not start a hypervisor of its own) and each
// vCPU's APIC id filled in.
CpuidEntries guest_cpuid(const Kvm& kvm, unsigned vcpu_id) {
    CpuidEntries cpuid = kvm.supported_cpuid();
    for (auto& e : cpuid.entries) {
        switch (e.function) {
            case 0x1:
                e.ecx &= ~(1U << 5);  // VMX
                e.ecx |= 1U << 31;    // "running under a hypervisor": enables kvmclock & co.
                e.ebx = (e.ebx & 0x00ffffffU) | (vcpu_id << 24);
                break;
            case 0xb:
            case 0x1f: e.edx = vcpu_id; break;
            case 0x80000001: e.ecx &= ~(1U << 2); break;  // SVM
            default: break;
        }
    }
    return cpuid;
}

// LAPIC LINT0 = ExtINT (the PIC's output in virtual-wire mode: the kernel
// runs with noapic), LINT1 = NMI, as a PC's BIOS would leave them.
void set_lapic_lints(const Vcpu& vcpu) {
    constexpr std::size_t kLvt0 = 0x350, kLvt1 = 0x360;
    constexpr std::uint32_t kModeExtInt = 0x7, kModeNmi = 0x4;
    kvm_lapic_state lapic = vcpu.get_lapic();
    auto set_mode = [&](std::size_t offset, std::uint32_t mode) {
        std::uint32_t v = 0;
        std::memcpy(&v, lapic.regs + offset, sizeof v);
        v = (v & ~0x700U) | (mode << 8);
        std::memcpy(lapic.regs + offset, &v, sizeof v);
    };
    set_mode(kLvt0, kModeExtInt);
    set_mode(kLvt1, kModeNmi);
    vcpu.set_lapic(lapic);
}

void set_initial_fpu(const Vcpu& vcpu) {
    kvm_fpu fpu{};
    fpu.fcw = 0x37f;     // x87 default control word
    fpu.mxcsr = 0x1f80;  // SSE default: all exceptions masked
    vcpu.set_fpu(fpu);
}

}  // namespace

Machine::Machine(VmConfig config, Kvm kvm, Vm vm, GuestMemory memory)
    : config_(std::move(config)), kvm_(std::move(kvm)), vm_(std::move(vm)), memory_(std::move(memory)) {}

std::unique_ptr<Machine> Machine::create(const VmConfig& config, GuestMemory memory,
                                         std::optional<Kvm> given) {
    Kvm kvm = given ? std::move(*given) : Kvm::open();
    Vm vm = kvm.create_vm();
    vm.set_tss_addr(layout::kTssAddr);
    vm.set_identity_map_addr(layout::kIdentityMapAddr);
    vm.create_irqchip();
    vm.create_pit2();

    std::uint32_t slot = 0;
    for (const auto& r : memory.regions()) {
        vm.set_user_memory_region(slot++, r.guest_phys, r.size, memory.host_base() + r.host_offset);
    }

    std::unique_ptr<Machine> m(new Machine(config, std::move(kvm), std::move(vm), std::move(memory)));
    int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (efd < 0) throw SysError("eventfd", errno);
    m->event_fd_.reset(efd);

    Machine* self = m.get();
    auto irq = [self](std::uint32_t line) {
        return [self, line](bool level) {
            try {
                self->vm_.irq_line(line, level);
            } catch (const SysError& e) {
                spdlog::warn("{}", e.what());
            }
        };
    };
    auto notify = [self] { self->notify(); };
    m->console_ = std::make_shared<Serial>(irq(kConsoleIrq), notify);
    m->agent_ = std::make_shared<Serial>(irq(kAgentIrq), notify);
    m->i8042_ = std::make_shared<I8042>([self] {
        // reboot=k: the guest's reboot, poweroff and panic all end here.
        self->on_vcpu_stop("guest shut down (i8042 reset)", true);
    });
    m->pio_.insert(kConsolePort, 8, m->console_, "uart0 (console)");
    m->pio_.insert(kAgentPort, 8, m->agent_, "uart1 (agent)");
    m->pio_.insert(I8042::kDataPort, 5, m->i8042_, "i8042");
    m->rtc_ = std::make_shared<CmosRtc>();
    m->pio_.insert(CmosRtc::kIndexPort, 2, m->rtc_, "cmos-rtc");
    m->agent_port_ = m->agent_.get();
    if (config.agent_channel == AgentChannel::virtio) {
        VirtioPciCallbacks callbacks{irq(kVirtioConsoleIrq), [self](const std::string& reason) {
                                         // A malformed queue is the guest's doing: the VM is
                                         // broken, never the host (docs/agent-protocol.md).
                                         spdlog::warn("virtio console broken: {}", reason);
                                         self->on_vcpu_stop("virtio console: " + reason, false);
                                     }};
        m->virtio_console_ = std::make_shared<VirtioConsole>(
            m->memory_, static_cast<std::uint32_t>(kVirtioConsoleBar),
            static_cast<std::uint8_t>(kVirtioConsoleIrq), std::move(callbacks), notify);
        m->pci_ = std::make_unique<PciRoot>();
        m->pci_->add(kVirtioConsoleSlot, m->virtio_console_);
        m->pio_.insert(PciRoot::kConfigPorts, PciRoot::kConfigPortCount, m->pci_->config_ports(),
                       "pci config");
        m->mmio_.insert(PciRoot::kMmioBase, PciRoot::kMmioSize, m->pci_->mmio_window(), "pci mmio window");
        m->agent_port_ = m->virtio_console_.get();
    }
    VcpuRunner::install_kick_handler();
    return m;
}

void Machine::add_vcpu(Vcpu vcpu, bool start_paused) {
    Machine* self = this;
    vcpus_.push_back(std::make_unique<VcpuRunner>(
        std::move(vcpu), pio_, mmio_,
        [self](const std::string& reason, bool clean) { self->on_vcpu_stop(reason, clean); }, start_paused));
}

std::unique_ptr<Machine> Machine::boot(const VmConfig& config) {
    if (auto problems = validate(config); !problems.empty()) {
        throw std::invalid_argument("invalid VM config: " + problems.front().to_string());
    }
    auto m = create(config, GuestMemory::anonymous(config.memory_mb << 20));
    m->boot_info_ =
        load_linux(m->memory_, config.kernel_path, config.initrd_path, kernel_command_line(config));
    for (unsigned id = 0; id < config.vcpu_count; ++id) {
        Vcpu vcpu = m->vm_.create_vcpu(id);
        vcpu.set_cpuid(guest_cpuid(m->kvm_, id));
        set_lapic_lints(vcpu);
        set_initial_fpu(vcpu);
        if (id == 0) setup_boot_vcpu(vcpu, m->boot_info_);
        if (id == 0) m->msr_indices_ = snapshot_msr_indices(m->kvm_, vcpu);
        m->add_vcpu(std::move(vcpu), false);
    }
    return m;
}

Machine::~Machine() { stop("machine destroyed"); }

void Machine::start() {
    for (auto& v : vcpus_) v->start();
}

void Machine::pause() {
    for (auto& v : vcpus_) v->pause();
    std::lock_guard lock(mu_);
    paused_ = true;
}

void Machine::park() {
    if (!paused()) throw std::logic_error("Machine::park needs a paused VM");
    for (auto& v : vcpus_) v->park();
}

void Machine::resume() {
    {
        std::lock_guard lock(mu_);
        paused_ = false;
    }
    for (auto& v : vcpus_) {
        v->start();  // a restored, forked or parked vCPU has no thread yet
        v->resume();
    }
}

Machine::ExitCounts Machine::device_exits() const {
    ExitCounts c;
    for (const auto& v : vcpus_) {
        c.io += v->io_exits();
        c.mmio += v->mmio_exits();
    }
    return c;
}

bool Machine::paused() const {
    std::lock_guard lock(mu_);
    return paused_;
}

void Machine::stop(const std::string& reason) {
    {
        std::lock_guard lock(mu_);
        if (!stop_info_) stop_info_ = StopInfo{reason, true};
    }
    for (auto& v : vcpus_) v->stop_and_join();
    notify();
}

void Machine::on_vcpu_stop(const std::string& reason, bool clean) {
    // Called on a vCPU thread (or a device on it): record the first reason
    // and ask every vCPU to stop; the host side joins them in stop().
    {
        std::lock_guard lock(mu_);
        if (!stop_info_) stop_info_ = StopInfo{reason, clean};
    }
    for (auto& v : vcpus_) v->request_stop();
    notify();
}

std::optional<StopInfo> Machine::stop_info() const {
    std::lock_guard lock(mu_);
    return stop_info_;
}

void Machine::notify() const {
    std::uint64_t one = 1;
    // A full counter (never, in practice) still leaves the fd readable.
    (void)!::write(event_fd_.get(), &one, sizeof one);
}

void Machine::clear_event() const {
    std::uint64_t value = 0;
    (void)!::read(event_fd_.get(), &value, sizeof value);
}

}  // namespace forkvm::vmm
