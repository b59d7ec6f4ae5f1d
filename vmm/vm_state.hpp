#pragma once
// Capture and restore of KVM VM and vCPU state into a snapshot::StateFile
// (DESIGN.md §1 "State a snapshot must hold"). Every blob is the raw KVM
// struct (x86-64 layout; the state file's arch magic admits nothing else),
// except the variable-length ones, which are described where they are
// written (vm_state.cpp).
//
// Order of a restore into a fresh VM (the caller's part in brackets):
//   [create the VM, memory slots, TSS/identity map, irqchip, PIT2]
//   check_host_identity -> restore_vm_state -> [create the vCPUs] ->
//   restore_vcpu_state for each vCPU -> [devices] -> run.
// The VM must be paused when saving: no vCPU inside KVM_RUN, and any I/O or
// MMIO exit completed by one more KVM_RUN with immediate_exit set.
//
// Errors: a malformed section throws snapshot::SnapshotError(corrupt), a
// missing one SnapshotError(missing_section), a host that cannot run the
// snapshot SnapshotError(incompatible) saying what differs; failed ioctls
// throw SysError naming the ioctl.

#include <cstdint>
#include <vector>

#include "snapshot/state_file.hpp"
#include "vmm/kvm.hpp"

namespace forkvm::vmm {

// The MSRs to save on vCPUs of this VM: KVM_GET_MSR_INDEX_LIST, minus the
// ones KVM_GET_MSRS refuses on `vcpu` (the list names every MSR KVM knows,
// some exist only with a CPUID feature the guest does not have; probed once,
// after the vCPU's CPUID is set, and kept for the VM's life: every vCPU has
// the same CPUID), with MSR_IA32_TSC_DEADLINE (0x6e0) moved last.
// Why last: KVM_SET_MSRS applies entries in order, and KVM converts the
// deadline into a host timer relative to the guest TSC at the time of the
// write; written before the TSC, the deadline is armed against the new vCPU's
// TSC (near zero) and fires hours late or at once.
[[nodiscard]] std::vector<std::uint32_t> snapshot_msr_indices(const Kvm& kvm, const Vcpu& vcpu);

// Sections "vcpu.<index>.<name>" for every name in tags::kVcpuRestoreOrder.
// MP state is read first (KVM_GET_MP_STATE delivers pending INIT/SIPI
// events into the state it reports) and vCPU events last (the other reads
// must not be able to change what is pending).
void save_vcpu_state(const Vcpu& vcpu, unsigned index, const std::vector<std::uint32_t>& msr_indices,
                     snapshot::StateFile& state);

// Loads what save_vcpu_state wrote into a freshly created vCPU, in the order
// TSC frequency (only when it differs from this host's), CPUID, MP state,
// regs, sregs, XSAVE, XCRs, debug regs, LAPIC, MSRs, events.
void restore_vcpu_state(const Vcpu& vcpu, unsigned index, const snapshot::StateFile& state);

// PIC master, PIC slave, IOAPIC, PIT2 and kvmclock.
void save_vm_state(const Vm& vm, snapshot::StateFile& state);
void restore_vm_state(const Vm& vm, const snapshot::StateFile& state);

// Records KVM_GET_SUPPORTED_CPUID (tags::kHostCpuid) and the KVM
// capabilities a restore depends on (tags::kKvmCaps); check_host_identity
// refuses (SnapshotError incompatible) a host where any of them differs.
void save_host_identity(const Kvm& kvm, snapshot::StateFile& state);
void check_host_identity(const Kvm& kvm, const snapshot::StateFile& state);

}  // namespace forkvm::vmm
