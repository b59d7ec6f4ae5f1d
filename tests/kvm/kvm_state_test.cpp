// Snapshot of a running KVM guest (vmm/vm_state.hpp): a real-mode guest
// loops "counter += 1 (in memory); sum += counter (in BX); OUT 0x10,
// counter; OUT 0x11, sum". It is paused mid-loop, its vCPU and VM state go
// through a serialised StateFile into a NEW VM over a copy of its memory,
// and the copy must go on exactly where the original stopped: the next OUT
// is the next sum, then the next counter. Registers, FPU, debug registers,
// TSC and kvmclock are compared directly. Also: the host identity check
// passes on this host and names what differs in a tampered file, and
// malformed sections are corrupt, not crashes.

#include <sys/mman.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "snapshot/snapshot_error.hpp"
#include "snapshot/state_file.hpp"
#include "snapshot/tags.hpp"
#include "vmm/kvm.hpp"
#include "vmm/sys_error.hpp"
#include "vmm/vm_state.hpp"

namespace {

using forkvm::Mapping;
using forkvm::SysError;
using forkvm::snapshot::SnapshotError;
using forkvm::snapshot::SnapshotErrorKind;
using forkvm::snapshot::StateFile;
using forkvm::vmm::Kvm;
using forkvm::vmm::Vcpu;
using forkvm::vmm::Vm;
namespace tags = forkvm::snapshot::tags;

constexpr std::uint64_t kGuestMemSize = 0x10000;  // 64 KiB
constexpr std::uint64_t kCodeAddr = 0x1000;
constexpr std::uint64_t kCounterAddr = 0x2000;
constexpr std::uint16_t kCounterPort = 0x10;
constexpr std::uint16_t kSumPort = 0x11;
constexpr std::uint32_t kMsrTsc = 0x10;
constexpr std::uint32_t kMsrTscDeadline = 0x6e0;
constexpr std::size_t kXmm0Offset = 160;
constexpr std::size_t kXstateBvOffset = 512;

const std::vector<std::uint8_t> kGuestCode = {
    0xff, 0x06, 0x00, 0x20,  // loop: inc word [0x2000]
    0xa1, 0x00, 0x20,        //       mov ax, [0x2000]
    0x01, 0xc3,              //       add bx, ax
    0xe7, 0x10,              //       out 0x10, ax
    0x89, 0xd8,              //       mov ax, bx
    0xe7, 0x11,              //       out 0x11, ax
    0xeb, 0xef,              //       jmp loop (-17)
};

struct Out {
    std::uint16_t port;
    std::uint16_t value;
};

// A VM as machine.cpp builds one, reduced to what the test guest needs.
struct TestVm {
    Vm vm;
    Mapping mem;
};

TestVm make_vm(const Kvm& kvm, const std::uint8_t* memory_to_copy) {
    Vm vm = kvm.create_vm();
    vm.set_tss_addr(0xfffbd000);
    vm.set_identity_map_addr(0xfffbc000);
    vm.create_irqchip();
    vm.create_pit2();
    Mapping mem = Mapping::map(kGuestMemSize, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0, "mmap guest memory");
    if (memory_to_copy != nullptr) std::memcpy(mem.bytes(), memory_to_copy, kGuestMemSize);
    vm.set_user_memory_region(0, 0, kGuestMemSize, mem.get());
    return TestVm{std::move(vm), std::move(mem)};
}

// KVM_RUN until the next 16-bit OUT; anything else fails the test.
Out next_out(const Vcpu& vcpu) {
    for (int attempt = 0; attempt < 16; ++attempt) {
        int err = vcpu.run();
        if (err == EINTR || err == EAGAIN) continue;
        if (err != 0) throw SysError("KVM_RUN", err);
        const kvm_run& run = vcpu.run_state();
        INFO("exit reason " << forkvm::vmm::exit_reason_name(run.exit_reason));
        REQUIRE(run.exit_reason == KVM_EXIT_IO);
        REQUIRE(run.io.direction == KVM_EXIT_IO_OUT);
        REQUIRE(run.io.size == 2);
        REQUIRE(run.io.count == 1);
        std::uint16_t value = 0;
        std::memcpy(&value, vcpu.io_data(), sizeof value);
        return Out{run.io.port, value};
    }
    FAIL("KVM_RUN kept being interrupted");
    return {};
}

// Completes the pending OUT (KVM finishes it on the next KVM_RUN) without
// running guest code: the pause of DESIGN.md §1.
void pause(const Vcpu& vcpu) {
    vcpu.run_state().immediate_exit = 1;
    int err = vcpu.run();
    vcpu.run_state().immediate_exit = 0;
    REQUIRE(err == EINTR);
}

std::uint64_t msr_value(const std::vector<kvm_msr_entry>& entries, std::uint32_t index) {
    auto it = std::find_if(entries.begin(), entries.end(),
                           [&](const kvm_msr_entry& e) { return e.index == index; });
    REQUIRE(it != entries.end());
    return it->data;
}

// A copy of `state` with section `tag` passed through `edit`.
StateFile with_section_edited(const StateFile& state, std::string_view tag,
                              const std::function<void(std::vector<std::uint8_t>&)>& edit) {
    StateFile out;
    for (const auto& s : state.sections()) {
        std::vector<std::uint8_t> data = s.data;
        if (s.tag == tag) edit(data);
        out.add(s.tag, data);
    }
    return out;
}

StateFile without_section(const StateFile& state, std::string_view tag) {
    StateFile out;
    for (const auto& s : state.sections()) {
        if (s.tag != tag) out.add(s.tag, s.data);
    }
    return out;
}

template <typename Fn>
void check_throws_kind(Fn&& fn, SnapshotErrorKind kind, const std::string& needle) {
    try {
        fn();
        FAIL("no SnapshotError (expected " << forkvm::snapshot::kind_name(kind) << ")");
    } catch (const SnapshotError& e) {
        INFO(e.what());
        CHECK(e.kind() == kind);
        CHECK(std::string(e.what()).find(needle) != std::string::npos);
    }
}

// The snapshot under test, taken once per process (the emulated host is slow).
struct Fixture {
    Kvm kvm = Kvm::open();
    TestVm original;
    std::optional<Vcpu> vcpu;
    std::vector<std::uint32_t> msr_indices;
    kvm_regs saved_regs{};
    kvm_clock_data saved_clock{};
    std::uint64_t saved_tsc = 0;
    StateFile state;  // serialised and parsed back
    std::vector<std::uint8_t> memory_at_pause;
    std::uint16_t counter_at_pause = 0;
    std::uint16_t sum_at_pause = 0;

    Fixture() : original(make_vm(kvm, nullptr)) {
        std::memcpy(original.mem.bytes() + kCodeAddr, kGuestCode.data(), kGuestCode.size());
        vcpu.emplace(original.vm.create_vcpu(0));
        vcpu->set_cpuid(kvm.supported_cpuid());
        auto sregs = vcpu->get_sregs();
        sregs.cs.base = 0;
        sregs.cs.selector = 0;
        vcpu->set_sregs(sregs);
        kvm_regs regs{};
        regs.rip = kCodeAddr;
        regs.rflags = 0x2;
        vcpu->set_regs(regs);
        // Marks in state the guest code does not touch: they must survive.
        // XMM0 through the XSAVE area (legacy region offset 160), with the SSE
        // bit set in XSTATE_BV (offset 512) so the value is not "init state".
        auto xsave = vcpu->get_xsave();
        for (std::size_t i = 0; i < 16; ++i) xsave[kXmm0Offset + i] = static_cast<std::uint8_t>(0xa0 + i);
        xsave[kXstateBvOffset] |= 0x2;
        vcpu->set_xsave(xsave);
        auto dbg = vcpu->get_debugregs();
        dbg.db[0] = 0x1234;
        vcpu->set_debugregs(dbg);

        // Five loop iterations; stop right after the fifth counter OUT.
        std::uint16_t sum = 0;
        for (std::uint16_t i = 1; i <= 5; ++i) {
            Out c = next_out(*vcpu);
            REQUIRE(c.port == kCounterPort);
            REQUIRE(c.value == i);
            sum = static_cast<std::uint16_t>(sum + i);
            if (i == 5) break;
            Out s = next_out(*vcpu);
            REQUIRE(s.port == kSumPort);
            REQUIRE(s.value == sum);
        }
        counter_at_pause = 5;
        sum_at_pause = sum;
        pause(*vcpu);

        msr_indices = forkvm::vmm::snapshot_msr_indices(kvm, *vcpu);
        StateFile fresh;
        forkvm::vmm::save_host_identity(kvm, fresh);
        forkvm::vmm::save_vm_state(original.vm, fresh);
        forkvm::vmm::save_vcpu_state(*vcpu, 0, msr_indices, fresh);
        saved_regs = fresh.get_struct<kvm_regs>(tags::vcpu_tag(0, "regs"));
        saved_clock = fresh.get_struct<kvm_clock_data>(tags::kClock);
        auto msrs = fresh.section(tags::vcpu_tag(0, "msrs"));
        for (std::size_t off = 8; off + sizeof(kvm_msr_entry) <= msrs.size(); off += sizeof(kvm_msr_entry)) {
            kvm_msr_entry e{};
            std::memcpy(&e, msrs.data() + off, sizeof e);
            if (e.index == kMsrTsc) saved_tsc = e.data;
        }
        memory_at_pause.assign(original.mem.bytes(), original.mem.bytes() + kGuestMemSize);

        auto bytes = fresh.serialize();
        state = StateFile::parse(bytes, "state.bin");
    }
};

Fixture& fixture() {
    static Fixture f;
    return f;
}

std::string hex_list(const std::vector<std::uint32_t>& v) {
    std::string out;
    for (auto x : v) out += fmt::format("{}{:#x}", out.empty() ? "" : " ", x);
    return out;
}

}  // namespace

TEST_CASE("kvm: vm_state: a restored copy of a paused guest continues exactly where it stopped") {
    Fixture& f = fixture();

    std::size_t vcpu_bytes = 0;
    for (const auto& s : f.state.sections()) {
        if (s.tag.starts_with("vcpu.0.")) vcpu_bytes += s.data.size();
    }
    MESSAGE("MSRs saved (" << f.msr_indices.size() << "): " << hex_list(f.msr_indices));
    MESSAGE("state of one vCPU: " << vcpu_bytes << " bytes; xsave " << f.vcpu->xsave_size() << " bytes");
    for (auto name : tags::kVcpuRestoreOrder) CHECK(f.state.contains(tags::vcpu_tag(0, name)));

    // The MSR list: TSC in it, TSC_DEADLINE (when present) last.
    CHECK(std::find(f.msr_indices.begin(), f.msr_indices.end(), kMsrTsc) != f.msr_indices.end());
    auto deadline = std::find(f.msr_indices.begin(), f.msr_indices.end(), kMsrTscDeadline);
    if (deadline != f.msr_indices.end()) CHECK(deadline + 1 == f.msr_indices.end());

    CHECK(f.saved_tsc > 0);

    // A new VM over a copy of the paused guest's memory.
    TestVm copy = make_vm(f.kvm, f.memory_at_pause.data());
    forkvm::vmm::check_host_identity(f.kvm, f.state);
    forkvm::vmm::restore_vm_state(copy.vm, f.state);
    Vcpu vcpu = copy.vm.create_vcpu(0);
    forkvm::vmm::restore_vcpu_state(vcpu, 0, f.state);

    // Registers as saved (RIP past the completed OUT, BX = the sum).
    kvm_regs regs = vcpu.get_regs();
    CHECK(regs.rip == f.saved_regs.rip);
    CHECK(regs.rbx == f.sum_at_pause);
    CHECK(std::memcmp(&regs, &f.saved_regs, sizeof regs) == 0);
    auto sregs = vcpu.get_sregs();
    auto saved_sregs = f.state.get_struct<kvm_sregs>(tags::vcpu_tag(0, "sregs"));
    CHECK(sregs.cs.selector == saved_sregs.cs.selector);
    CHECK(sregs.cr0 == saved_sregs.cr0);
    CHECK(sregs.apic_base == saved_sregs.apic_base);
    CHECK(vcpu.get_mp_state().mp_state ==
          f.state.get_struct<kvm_mp_state>(tags::vcpu_tag(0, "mp_state")).mp_state);
    auto saved_xsave = f.state.section(tags::vcpu_tag(0, "xsave"));
    auto xsave = vcpu.get_xsave();
    REQUIRE(saved_xsave.size() == xsave.size());
    auto fpu = vcpu.get_fpu();
    for (std::uint8_t i = 0; i < 16; ++i) {
        CHECK(saved_xsave[kXmm0Offset + i] == 0xa0 + i);
        CHECK(xsave[kXmm0Offset + i] == 0xa0 + i);
        CHECK(fpu.xmm[0][i] == 0xa0 + i);
    }
    CHECK(vcpu.get_debugregs().db[0] == 0x1234);
    CHECK(vcpu.get_cpuid().entries.size() == f.vcpu->get_cpuid().entries.size());

    // Guest time does not go backwards: TSC and kvmclock at least as saved
    // (a new VM starts both near zero, below the original's).
    auto msrs = vcpu.get_msrs(f.msr_indices);
    CHECK(msr_value(msrs, kMsrTsc) >= f.saved_tsc);
    CHECK(copy.vm.get_clock().clock >= f.saved_clock.clock);

    // The copy runs on: sum of 1..5, then counter 6, then sum of 1..6.
    Out s = next_out(vcpu);
    CHECK(s.port == kSumPort);
    CHECK(s.value == f.sum_at_pause);
    Out c = next_out(vcpu);
    CHECK(c.port == kCounterPort);
    CHECK(c.value == f.counter_at_pause + 1);
    Out s2 = next_out(vcpu);
    CHECK(s2.port == kSumPort);
    CHECK(s2.value == f.sum_at_pause + f.counter_at_pause + 1);
    std::uint16_t counter = 0;
    std::memcpy(&counter, copy.mem.bytes() + kCounterAddr, sizeof counter);
    CHECK(counter == f.counter_at_pause + 1);

    // The original, resumed, produces the same sequence on its own memory.
    Out os = next_out(*f.vcpu);
    CHECK(os.port == kSumPort);
    CHECK(os.value == f.sum_at_pause);
}

TEST_CASE("kvm: vm_state: the host identity check passes here and names what differs") {
    Fixture& f = fixture();
    forkvm::vmm::check_host_identity(f.kvm, f.state);  // same host: no throw

    // CPUID leaf 0 ebx (vendor "Auth"/"Genu") changed in the snapshot.
    auto tampered = with_section_edited(f.state, tags::kHostCpuid, [](std::vector<std::uint8_t>& data) {
        std::uint32_t nent = 0;
        std::memcpy(&nent, data.data(), sizeof nent);
        for (std::uint32_t i = 0; i < nent; ++i) {
            kvm_cpuid_entry2 e{};
            std::memcpy(&e, data.data() + 8 + i * sizeof e, sizeof e);
            if (e.function == 0 && e.index == 0) {
                e.ebx ^= 0x1;
                std::memcpy(data.data() + 8 + i * sizeof e, &e, sizeof e);
            }
        }
    });
    check_throws_kind([&] { forkvm::vmm::check_host_identity(f.kvm, tampered); },
                      SnapshotErrorKind::incompatible, "CPUID leaf 0x0 subleaf 0 ebx differs");

    // A capability value changed (the list is {u32 id, i32 value} after a u32 count).
    auto caps = with_section_edited(f.state, tags::kKvmCaps, [](std::vector<std::uint8_t>& data) {
        std::uint32_t count = 0;
        std::memcpy(&count, data.data(), sizeof count);
        for (std::uint32_t i = 0; i < count; ++i) {
            std::uint32_t id = 0;
            std::memcpy(&id, data.data() + 4 + i * 8, sizeof id);
            if (id == KVM_CAP_XSAVE2) {
                std::int32_t v = 123456;
                std::memcpy(data.data() + 8 + i * 8, &v, sizeof v);
            }
        }
    });
    check_throws_kind([&] { forkvm::vmm::check_host_identity(f.kvm, caps); }, SnapshotErrorKind::incompatible,
                      "KVM capability XSAVE2: snapshot 123456, host");

    // A leaf the host does not have.
    auto extra = with_section_edited(f.state, tags::kHostCpuid, [](std::vector<std::uint8_t>& data) {
        kvm_cpuid_entry2 e{};
        e.function = 0x4fff0000;
        std::uint32_t nent = 0;
        std::memcpy(&nent, data.data(), sizeof nent);
        ++nent;
        std::memcpy(data.data(), &nent, sizeof nent);
        const auto* p = reinterpret_cast<const std::uint8_t*>(&e);
        data.insert(data.end(), p, p + sizeof e);
    });
    check_throws_kind([&] { forkvm::vmm::check_host_identity(f.kvm, extra); },
                      SnapshotErrorKind::incompatible,
                      "CPUID leaf 0x4fff0000 subleaf 0 is in the snapshot but not on this host");
}

TEST_CASE("kvm: vm_state: malformed or missing sections are refused with a typed error") {
    Fixture& f = fixture();
    const std::string msrs_tag = tags::vcpu_tag(0, "msrs");

    auto restore_into_new_vm = [&](const StateFile& state) {
        TestVm copy = make_vm(f.kvm, f.memory_at_pause.data());
        forkvm::vmm::restore_vm_state(copy.vm, state);
        Vcpu vcpu = copy.vm.create_vcpu(0);
        forkvm::vmm::restore_vcpu_state(vcpu, 0, state);
    };

    auto truncated = with_section_edited(f.state, msrs_tag,
                                         [](std::vector<std::uint8_t>& d) { d.erase(d.end() - 8, d.end()); });
    check_throws_kind([&] { restore_into_new_vm(truncated); }, SnapshotErrorKind::corrupt, msrs_tag);

    auto huge_count = with_section_edited(f.state, msrs_tag, [](std::vector<std::uint8_t>& d) {
        std::uint32_t n = 0xffffffffU;
        std::memcpy(d.data(), &n, sizeof n);
    });
    check_throws_kind([&] { restore_into_new_vm(huge_count); }, SnapshotErrorKind::corrupt,
                      "more than the limit");

    auto short_header = with_section_edited(f.state, tags::vcpu_tag(0, "cpuid"),
                                            [](std::vector<std::uint8_t>& d) { d.resize(3); });
    check_throws_kind([&] { restore_into_new_vm(short_header); }, SnapshotErrorKind::corrupt,
                      "8-byte header");

    auto short_regs = with_section_edited(f.state, tags::vcpu_tag(0, "regs"),
                                          [](std::vector<std::uint8_t>& d) { d.pop_back(); });
    check_throws_kind([&] { restore_into_new_vm(short_regs); }, SnapshotErrorKind::corrupt, "regs");

    auto odd_xsave = with_section_edited(f.state, tags::vcpu_tag(0, "xsave"),
                                         [](std::vector<std::uint8_t>& d) { d.resize(100); });
    check_throws_kind([&] { restore_into_new_vm(odd_xsave); }, SnapshotErrorKind::corrupt, "XSAVE");

    check_throws_kind([&] { restore_into_new_vm(without_section(f.state, tags::kPit2)); },
                      SnapshotErrorKind::missing_section, std::string(tags::kPit2));

    auto bad_caps =
        with_section_edited(f.state, tags::kKvmCaps, [](std::vector<std::uint8_t>& d) { d.resize(5); });
    check_throws_kind([&] { forkvm::vmm::check_host_identity(f.kvm, bad_caps); }, SnapshotErrorKind::corrupt,
                      std::string(tags::kKvmCaps));

    // A short count from KVM_GET_MSRS names the MSR it refused.
    try {
        (void)f.vcpu->get_msrs(std::vector<std::uint32_t>{kMsrTsc, 0xdeadbeef});
        FAIL("KVM_GET_MSRS of MSR 0xdeadbeef succeeded");
    } catch (const SysError& e) {
        CHECK(std::string(e.what()).find("KVM_GET_MSRS: MSR 0xdeadbeef (entry 1 of 2)") != std::string::npos);
    }
}
