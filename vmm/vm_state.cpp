#include "vmm/vm_state.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <fmt/format.h>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>

#include "snapshot/snapshot_error.hpp"
#include "snapshot/tags.hpp"
#include "vmm/sys_error.hpp"

namespace forkvm::vmm {
namespace {

using snapshot::SnapshotError;
using snapshot::SnapshotErrorKind;
using snapshot::StateFile;
namespace tags = snapshot::tags;

// The state file stores these structs as raw bytes: pin their sizes so a
// header change cannot silently change the format (bump kFormatVersion then).
static_assert(sizeof(kvm_regs) == 144 && sizeof(kvm_sregs) == 312 && sizeof(kvm_lapic_state) == 1024);
static_assert(sizeof(kvm_xcrs) == 392 && sizeof(kvm_debugregs) == 128 && sizeof(kvm_mp_state) == 4);
static_assert(sizeof(kvm_vcpu_events) == 64 && sizeof(kvm_irqchip) == 520 && sizeof(kvm_pit_state2) == 112);
static_assert(sizeof(kvm_clock_data) == 48 && sizeof(kvm_cpuid_entry2) == 40 && sizeof(kvm_msr_entry) == 16);

constexpr std::uint32_t kMsrTsc = 0x10;
constexpr std::uint32_t kMsrTscDeadline = 0x6e0;

// Bounds for the variable-length sections. KVM itself allows 256 CPUID
// entries (KVM_MAX_CPUID_ENTRIES) and knows a few hundred MSRs.
constexpr std::uint32_t kMaxCpuidEntries = 1024;
constexpr std::uint32_t kMaxMsrEntries = 4096;
constexpr std::uint32_t kMaxCaps = 256;
// The XSAVE area: at least the legacy 4096 bytes, at most far beyond any
// CPU's (AMX makes it ~11 KiB).
constexpr std::size_t kMaxXsaveSize = std::size_t{1} << 20;

// ---- Variable-length sections: the C layout of kvm_cpuid2 / kvm_msrs,
// i.e. a u32 count, a u32 of padding (0), then `count` entries.

template <typename Entry>
std::vector<std::uint8_t> encode_counted(const std::vector<Entry>& entries) {
    std::vector<std::uint8_t> bytes(8 + entries.size() * sizeof(Entry), 0);
    auto count = static_cast<std::uint32_t>(entries.size());
    std::memcpy(bytes.data(), &count, sizeof count);
    if (!entries.empty()) std::memcpy(bytes.data() + 8, entries.data(), entries.size() * sizeof(Entry));
    return bytes;
}

template <typename Entry>
std::vector<Entry> decode_counted(const StateFile& state, std::string_view tag, std::uint32_t max_count) {
    auto bytes = state.section(tag);
    auto corrupt = [&](const std::string& problem) {
        return SnapshotError(SnapshotErrorKind::corrupt, state.source(),
                             fmt::format("section {}: {}", tag, problem));
    };
    if (bytes.size() < 8)
        throw corrupt(fmt::format("{} bytes, shorter than its 8-byte header", bytes.size()));
    std::uint32_t count = 0;
    std::uint32_t pad = 0;
    std::memcpy(&count, bytes.data(), sizeof count);
    std::memcpy(&pad, bytes.data() + 4, sizeof pad);
    if (count > max_count) throw corrupt(fmt::format("{} entries, more than the limit {}", count, max_count));
    if (pad != 0) throw corrupt("non-zero padding in the header");
    std::size_t expected = 8 + std::size_t{count} * sizeof(Entry);
    if (bytes.size() != expected)
        throw corrupt(fmt::format("{} bytes, but {} entries need {}", bytes.size(), count, expected));
    std::vector<Entry> entries(count);
    if (count > 0) std::memcpy(entries.data(), bytes.data() + 8, std::size_t{count} * sizeof(Entry));
    return entries;
}

// ---- Host identity.

struct Capability {
    long id;
    const char* name;
};

// The capabilities whose value a restore depends on: the state layouts
// (XSAVE2 size, XCRS, DEBUGREGS, VCPU_EVENTS, MP_STATE, PIT_STATE2,
// ADJUST_CLOCK's flags), the TSC handling (TSC_CONTROL, GET_TSC_KHZ,
// TSC_DEADLINE_TIMER) and the vCPU limit. NR_VCPUS (the host's CPU count) is
// left out on purpose: it differs between machines of one kind and changes
// nothing a snapshot holds.
constexpr std::array<Capability, 16> kCapabilities = {{
    {KVM_CAP_XSAVE, "XSAVE"},
    {KVM_CAP_XSAVE2, "XSAVE2"},
    {KVM_CAP_XCRS, "XCRS"},
    {KVM_CAP_DEBUGREGS, "DEBUGREGS"},
    {KVM_CAP_VCPU_EVENTS, "VCPU_EVENTS"},
    {KVM_CAP_MP_STATE, "MP_STATE"},
    {KVM_CAP_IRQCHIP, "IRQCHIP"},
    {KVM_CAP_PIT2, "PIT2"},
    {KVM_CAP_PIT_STATE2, "PIT_STATE2"},
    {KVM_CAP_ADJUST_CLOCK, "ADJUST_CLOCK"},
    {KVM_CAP_KVMCLOCK_CTRL, "KVMCLOCK_CTRL"},
    {KVM_CAP_TSC_CONTROL, "TSC_CONTROL"},
    {KVM_CAP_GET_TSC_KHZ, "GET_TSC_KHZ"},
    {KVM_CAP_TSC_DEADLINE_TIMER, "TSC_DEADLINE_TIMER"},
    {KVM_CAP_EXT_CPUID, "EXT_CPUID"},
    {KVM_CAP_MAX_VCPUS, "MAX_VCPUS"},
}};

std::string capability_name(std::uint32_t id) {
    for (const auto& cap : kCapabilities) {
        if (static_cast<std::uint32_t>(cap.id) == id) return cap.name;
    }
    return fmt::format("#{}", id);
}

struct CapValue {
    std::uint32_t id;
    std::int32_t value;
};
static_assert(sizeof(CapValue) == 8);

// CPUID fields that name the host CPU the ioctl happened to run on (APIC
// ids), not what the host can do: zeroed before comparing, or two calls on
// one host could differ.
kvm_cpuid_entry2 without_topology_ids(kvm_cpuid_entry2 e) {
    switch (e.function) {
        case 0x1: e.ebx &= 0x00ffffffU; break;  // initial APIC id
        case 0xb:
        case 0x1f: e.edx = 0; break;  // x2APIC id
        case 0x8000001e:              // extended APIC id, core and node ids
            e.eax = 0;
            e.ebx &= ~0xffU;
            e.ecx &= ~0xffU;
            break;
        default: break;
    }
    e.padding[0] = e.padding[1] = e.padding[2] = 0;
    return e;
}

using CpuidKey = std::pair<std::uint32_t, std::uint32_t>;  // leaf, subleaf

std::map<CpuidKey, kvm_cpuid_entry2> cpuid_by_leaf(const std::vector<kvm_cpuid_entry2>& entries,
                                                   const std::string& source, std::string_view what) {
    std::map<CpuidKey, kvm_cpuid_entry2> out;
    for (const auto& e : entries) {
        if (!out.emplace(CpuidKey{e.function, e.index}, without_topology_ids(e)).second) {
            throw SnapshotError(
                SnapshotErrorKind::corrupt, source,
                fmt::format("{}: CPUID leaf {:#x} subleaf {} listed twice", what, e.function, e.index));
        }
    }
    return out;
}

void check_cpuid(const std::vector<kvm_cpuid_entry2>& saved, const std::vector<kvm_cpuid_entry2>& host,
                 const std::string& source) {
    auto incompatible = [&](const std::string& problem) {
        return SnapshotError(SnapshotErrorKind::incompatible, source, problem);
    };
    auto snap = cpuid_by_leaf(saved, source, "snapshot");
    auto here = cpuid_by_leaf(host, source, "host");
    for (const auto& [key, s] : snap) {
        auto it = here.find(key);
        if (it == here.end()) {
            throw incompatible(
                fmt::format("CPUID leaf {:#x} subleaf {} is in the snapshot but not on this host", key.first,
                            key.second));
        }
        const kvm_cpuid_entry2& h = it->second;
        const std::array<std::tuple<const char*, std::uint32_t, std::uint32_t>, 5> regs = {{
            {"eax", s.eax, h.eax},
            {"ebx", s.ebx, h.ebx},
            {"ecx", s.ecx, h.ecx},
            {"edx", s.edx, h.edx},
            {"flags", s.flags, h.flags},
        }};
        for (const auto& [reg, sv, hv] : regs) {
            if (sv != hv) {
                throw incompatible(
                    fmt::format("CPUID leaf {:#x} subleaf {} {} differs: snapshot {:#010x} host {:#010x}",
                                key.first, key.second, reg, sv, hv));
            }
        }
    }
    for (const auto& [key, h] : here) {
        if (!snap.contains(key)) {
            throw incompatible(
                fmt::format("CPUID leaf {:#x} subleaf {} is on this host but not in the snapshot", key.first,
                            key.second));
        }
    }
}

std::string tag_of(unsigned index, std::string_view name) { return tags::vcpu_tag(index, name); }

}  // namespace

std::vector<std::uint32_t> snapshot_msr_indices(const Kvm& kvm, const Vcpu& vcpu) {
    std::vector<std::uint32_t> list = kvm.msr_index_list();
    std::vector<kvm_msr_entry> probe(list.size());
    for (std::size_t i = 0; i < list.size(); ++i) probe[i].index = list[i];

    // KVM_GET_MSRS stops at the first MSR it refuses: keep what it read,
    // skip the refused one, carry on with the rest.
    std::vector<std::uint32_t> readable;
    std::size_t pos = 0;
    while (pos < probe.size()) {
        std::size_t done = vcpu.read_msrs(std::span<kvm_msr_entry>(probe).subspan(pos));
        for (std::size_t i = 0; i < done; ++i) readable.push_back(probe[pos + i].index);
        pos += done + 1;  // +1: the refused MSR (or past the end when all were read)
    }
    std::stable_partition(readable.begin(), readable.end(),
                          [](std::uint32_t msr) { return msr != kMsrTscDeadline; });
    return readable;
}

void save_vcpu_state(const Vcpu& vcpu, unsigned index, const std::vector<std::uint32_t>& msr_indices,
                     StateFile& state) {
    // MP state first: reading it lets KVM deliver pending INIT/SIPI first.
    state.add_struct(tag_of(index, "mp_state"), vcpu.get_mp_state());
    state.add(tag_of(index, "cpuid"), encode_counted(vcpu.get_cpuid().entries));
    state.add_u32(tag_of(index, "tsc_khz"), vcpu.get_tsc_khz());
    state.add_struct(tag_of(index, "regs"), vcpu.get_regs());
    state.add_struct(tag_of(index, "sregs"), vcpu.get_sregs());
    state.add(tag_of(index, "xsave"), vcpu.get_xsave());
    state.add_struct(tag_of(index, "xcrs"), vcpu.get_xcrs());
    state.add_struct(tag_of(index, "debugregs"), vcpu.get_debugregs());
    state.add_struct(tag_of(index, "lapic"), vcpu.get_lapic());
    state.add(tag_of(index, "msrs"), encode_counted(vcpu.get_msrs(msr_indices)));
    // Events last: pending exceptions/interrupts/NMIs as they stand at the end.
    state.add_struct(tag_of(index, "events"), vcpu.get_vcpu_events());
}

void restore_vcpu_state(const Vcpu& vcpu, unsigned index, const StateFile& state) {
    const std::string& source = state.source();

    // TSC frequency before anything reads or writes the TSC: KVM converts an
    // MSR_IA32_TSC write into an offset using the current frequency.
    // KVM_SET_TSC_KHZ only when needed: without TSC scaling KVM refuses any
    // change beyond its tolerance, even a no-op one on some kernels.
    std::uint32_t tsc_khz = state.get_u32(tag_of(index, "tsc_khz"));
    if (tsc_khz == 0) {
        throw SnapshotError(SnapshotErrorKind::corrupt, source,
                            fmt::format("section {}: TSC frequency 0", tag_of(index, "tsc_khz")));
    }
    std::uint32_t host_khz = vcpu.get_tsc_khz();
    if (tsc_khz != host_khz) {
        try {
            vcpu.set_tsc_khz(tsc_khz);
        } catch (const SysError& e) {
            throw SnapshotError(
                SnapshotErrorKind::incompatible, source,
                fmt::format("TSC frequency: snapshot {} kHz, host {} kHz, and KVM cannot scale it ({})",
                            tsc_khz, host_khz, e.what()));
        }
    }

    vcpu.set_cpuid(
        CpuidEntries{decode_counted<kvm_cpuid_entry2>(state, tag_of(index, "cpuid"), kMaxCpuidEntries)});
    vcpu.set_mp_state(state.get_struct<kvm_mp_state>(tag_of(index, "mp_state")));
    vcpu.set_regs(state.get_struct<kvm_regs>(tag_of(index, "regs")));
    vcpu.set_sregs(state.get_struct<kvm_sregs>(tag_of(index, "sregs")));

    auto xsave_tag = tag_of(index, "xsave");
    auto xsave = state.section(xsave_tag);
    if (xsave.size() < 4096 || xsave.size() > kMaxXsaveSize || xsave.size() % 64 != 0) {
        throw SnapshotError(
            SnapshotErrorKind::corrupt, source,
            fmt::format("section {}: {} bytes is not an XSAVE area size", xsave_tag, xsave.size()));
    }
    if (xsave.size() != vcpu.xsave_size()) {
        throw SnapshotError(
            SnapshotErrorKind::incompatible, source,
            fmt::format("XSAVE area: snapshot {} bytes, host {} bytes", xsave.size(), vcpu.xsave_size()));
    }
    vcpu.set_xsave(xsave);

    auto xcrs_tag = tag_of(index, "xcrs");
    auto xcrs = state.get_struct<kvm_xcrs>(xcrs_tag);
    if (xcrs.nr_xcrs > KVM_MAX_XCRS) {
        throw SnapshotError(
            SnapshotErrorKind::corrupt, source,
            fmt::format("section {}: {} XCRs, at most {}", xcrs_tag, xcrs.nr_xcrs, KVM_MAX_XCRS));
    }
    vcpu.set_xcrs(xcrs);
    vcpu.set_debugregs(state.get_struct<kvm_debugregs>(tag_of(index, "debugregs")));
    // LAPIC before MSRs: the TSC-deadline MSR is ignored unless the LAPIC
    // timer is already in TSC-deadline mode.
    vcpu.set_lapic(state.get_struct<kvm_lapic_state>(tag_of(index, "lapic")));
    // In saved order: snapshot_msr_indices put TSC_DEADLINE after the TSC.
    const auto msrs = decode_counted<kvm_msr_entry>(state, tag_of(index, "msrs"), kMaxMsrEntries);
    // KVM treats a host write of MSR_IA32_TSC within one second's worth of
    // cycles of what it expects (a new VM: about 0) as "synchronize with the
    // other vCPUs" and drops the value, so a snapshot taken less than a
    // second after boot would restore with its TSC near 0: guest time would
    // run backwards. Writing a value 10 s ahead first (far from expected:
    // honoured) makes the real value far from the new expectation too.
    for (const auto& entry : msrs) {
        if (entry.index != kMsrTsc) continue;
        kvm_msr_entry ahead = entry;
        ahead.data = entry.data + std::uint64_t{10} * 1000 * vcpu.get_tsc_khz();
        vcpu.set_msrs(std::span<const kvm_msr_entry>(&ahead, 1));
    }
    vcpu.set_msrs(msrs);

    // KVM_GET_VCPU_EVENTS does not mark the pending NMI and SIPI vector as
    // valid, so KVM_SET_VCPU_EVENTS would skip them: mark them (as QEMU does).
    auto events = state.get_struct<kvm_vcpu_events>(tag_of(index, "events"));
    events.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
    vcpu.set_vcpu_events(events);
}

void save_vm_state(const Vm& vm, StateFile& state) {
    state.add_struct(tags::kPicMaster, vm.get_irqchip(KVM_IRQCHIP_PIC_MASTER));
    state.add_struct(tags::kPicSlave, vm.get_irqchip(KVM_IRQCHIP_PIC_SLAVE));
    state.add_struct(tags::kIoapic, vm.get_irqchip(KVM_IRQCHIP_IOAPIC));
    state.add_struct(tags::kPit2, vm.get_pit2());
    state.add_struct(tags::kClock, vm.get_clock());
}

void restore_vm_state(const Vm& vm, const StateFile& state) {
    const std::string& source = state.source();
    const std::array<std::pair<std::string_view, std::uint32_t>, 3> chips = {{
        {tags::kPicMaster, KVM_IRQCHIP_PIC_MASTER},
        {tags::kPicSlave, KVM_IRQCHIP_PIC_SLAVE},
        {tags::kIoapic, KVM_IRQCHIP_IOAPIC},
    }};
    for (const auto& [tag, id] : chips) {
        auto chip = state.get_struct<kvm_irqchip>(tag);
        if (chip.chip_id != id) {
            throw SnapshotError(SnapshotErrorKind::corrupt, source,
                                fmt::format("section {}: irqchip id {}, expected {}", tag, chip.chip_id, id));
        }
        vm.set_irqchip(chip);
    }
    vm.set_pit2(state.get_struct<kvm_pit_state2>(tags::kPit2));

    // kvmclock: flags 0, i.e. set exactly the saved value. The guest's clock
    // stands still while the VM is paused or stored and never goes backwards.
    // Not KVM_CLOCK_REALTIME: it would add the wall time since the save (up
    // to days for a golden snapshot), firing every guest timer at once and
    // disagreeing with the TSC that the MSRs restore to its saved value; the
    // wall clock is corrected by the agent at resume instead. TSC_STABLE and
    // HOST_TSC are outputs of KVM_GET_CLOCK that KVM_SET_CLOCK ignores.
    auto saved = state.get_struct<kvm_clock_data>(tags::kClock);
    kvm_clock_data clock{};
    clock.clock = saved.clock;
    vm.set_clock(clock);
}

void save_host_identity(const Kvm& kvm, StateFile& state) {
    state.add(tags::kHostCpuid, encode_counted(kvm.supported_cpuid().entries));
    std::vector<CapValue> caps;
    caps.reserve(kCapabilities.size());
    for (const auto& cap : kCapabilities) {
        caps.push_back({static_cast<std::uint32_t>(cap.id), kvm.check_extension(cap.id)});
    }
    std::vector<std::uint8_t> bytes(4 + caps.size() * sizeof(CapValue));
    auto count = static_cast<std::uint32_t>(caps.size());
    std::memcpy(bytes.data(), &count, sizeof count);
    std::memcpy(bytes.data() + 4, caps.data(), caps.size() * sizeof(CapValue));
    state.add(tags::kKvmCaps, bytes);
}

void check_host_identity(const Kvm& kvm, const StateFile& state) {
    const std::string& source = state.source();

    // kvm.caps: u32 count, then count x {u32 capability, i32 value}.
    auto bytes = state.section(tags::kKvmCaps);
    std::uint32_t count = 0;
    if (bytes.size() >= 4) std::memcpy(&count, bytes.data(), sizeof count);
    if (bytes.size() < 4 || count > kMaxCaps || bytes.size() != 4 + std::size_t{count} * sizeof(CapValue)) {
        throw SnapshotError(
            SnapshotErrorKind::corrupt, source,
            fmt::format("section {}: {} bytes do not hold a capability list", tags::kKvmCaps, bytes.size()));
    }
    std::map<std::uint32_t, std::int32_t> saved;
    for (std::uint32_t i = 0; i < count; ++i) {
        CapValue cv{};
        std::memcpy(&cv, bytes.data() + 4 + std::size_t{i} * sizeof(CapValue), sizeof cv);
        saved[cv.id] = cv.value;
    }
    for (const auto& cap : kCapabilities) {
        if (!saved.contains(static_cast<std::uint32_t>(cap.id))) {
            throw SnapshotError(SnapshotErrorKind::incompatible, source,
                                fmt::format("KVM capability {} is not recorded in the snapshot", cap.name));
        }
    }
    for (const auto& [id, value] : saved) {
        int host = kvm.check_extension(static_cast<long>(id));
        if (host != value) {
            throw SnapshotError(
                SnapshotErrorKind::incompatible, source,
                fmt::format("KVM capability {}: snapshot {}, host {}", capability_name(id), value, host));
        }
    }

    check_cpuid(decode_counted<kvm_cpuid_entry2>(state, tags::kHostCpuid, kMaxCpuidEntries),
                kvm.supported_cpuid().entries, source);
}

}  // namespace forkvm::vmm
