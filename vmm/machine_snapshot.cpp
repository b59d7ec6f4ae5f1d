// Machine: saving state for a snapshot or a fork, and building a machine from
// saved state. Restore and fork share this one path (Machine::restore).

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

#include "snapshot/snapshot_error.hpp"
#include "snapshot/state_file.hpp"
#include "snapshot/tags.hpp"
#include "vmm/control_protocol.hpp"
#include "vmm/devices/device_state.hpp"
#include "vmm/machine.hpp"
#include "vmm/vm_state.hpp"

namespace forkvm::vmm {
namespace {

using snapshot::SnapshotError;
using snapshot::SnapshotErrorKind;

VmConfig config_from_state(const snapshot::StateFile& state) {
    const std::string text = state.get_string(snapshot::tags::kVmConfig);
    VmConfig config;
    try {
        config = control::config_from_json(nlohmann::json::parse(text));
    } catch (const std::exception& e) {
        throw SnapshotError(SnapshotErrorKind::corrupt, state.source(),
                            std::string("section vm.config: ") + e.what());
    }
    if (config.vcpu_count == 0 || config.vcpu_count > VmConfig::kMaxVcpus ||
        config.memory_mb < VmConfig::kMinMemoryMb || config.memory_mb > VmConfig::kMaxMemoryMb) {
        throw SnapshotError(SnapshotErrorKind::corrupt, state.source(),
                            "section vm.config: vCPU count or memory size out of range");
    }
    return config;
}

template <typename Device>
void load_device(Device& device, const snapshot::StateFile& state, std::string_view tag) {
    try {
        device.load_state(state.section(tag));
    } catch (const DeviceStateError& e) {
        throw SnapshotError(SnapshotErrorKind::corrupt, state.source(),
                            "section " + std::string(tag) + ": " + e.what());
    }
}

}  // namespace

void Machine::save_state(snapshot::StateFile& state) const {
    if (!paused()) throw std::logic_error("Machine::save_state needs a paused VM");
    namespace tags = snapshot::tags;
    state.add_string(tags::kVmConfig, control::config_to_json(config_).dump());
    save_host_identity(kvm_, state);
    save_vm_state(vm_, state);
    for (unsigned i = 0; i < vcpus_.size(); ++i) save_vcpu_state(vcpus_[i]->vcpu(), i, msr_indices_, state);
    state.add(tags::kUart0, console_->save_state());
    state.add(tags::kUart1, agent_->save_state());
    state.add(tags::kI8042, i8042_->save_state());
    state.add(tags::kRtc, rtc_->save_state());
    if (pci_) {
        state.add(tags::kPci, pci_->save_state());
        state.add(tags::kVirtioConsole, virtio_console_->save_state());
    }
}

std::unique_ptr<Machine> Machine::restore(GuestMemory memory, const snapshot::StateFile& state,
                                          std::optional<Kvm> kvm) {
    namespace tags = snapshot::tags;
    VmConfig config = config_from_state(state);
    if (memory.size() != config.memory_mb << 20) {
        throw SnapshotError(SnapshotErrorKind::corrupt, state.source(),
                            "guest memory is " + std::to_string(memory.size()) +
                                " bytes, the VM config says " + std::to_string(config.memory_mb) + " MiB");
    }
    auto m = create(config, std::move(memory), std::move(kvm));
    check_host_identity(m->kvm_, state);
    restore_vm_state(m->vm_, state);
    for (unsigned id = 0; id < config.vcpu_count; ++id) {
        Vcpu vcpu = m->vm_.create_vcpu(id);
        restore_vcpu_state(vcpu, id, state);
        if (id == 0) m->msr_indices_ = snapshot_msr_indices(m->kvm_, vcpu);
        m->add_vcpu(std::move(vcpu), true);
    }
    load_device(*m->console_, state, tags::kUart0);
    load_device(*m->agent_, state, tags::kUart1);
    load_device(*m->i8042_, state, tags::kI8042);
    load_device(*m->rtc_, state, tags::kRtc);
    if (m->pci_) {
        load_device(*m->pci_, state, tags::kPci);
        load_device(*m->virtio_console_, state, tags::kVirtioConsole);
    }
    std::lock_guard lock(m->mu_);
    m->paused_ = true;
    return m;
}

Machine::ForkInheritance Machine::release_in_fork_child(std::unique_ptr<Machine> machine) {
    // No vCPU thread exists (the parent parked them before forking), so the
    // runners' destructors join nothing; closing the copied KVM fds and
    // unmapping the copied kvm_run pages touches only this process.
    machine->event_fd_.reset();  // shared with the parent: never write it here
    ForkInheritance inherited{std::move(machine->memory_), std::move(machine->kvm_)};
    machine->vcpus_.clear();
    machine.reset();
    return inherited;
}

}  // namespace forkvm::vmm
