// The first real KVM test: a VM with one memory slot runs a few real-mode
// instructions that write known bytes to an I/O port and halt. It checks the
// bytes, the port, and the exit reasons, so a KVM that does not run guest code
// (or a vmm/ layer that sets it up wrongly) fails here.

#include <sys/mman.h>

#include <cstdint>
#include <cstring>
#include <doctest/doctest.h>
#include <string>
#include <vector>

#include "vmm/kvm.hpp"
#include "vmm/sys_error.hpp"

namespace {

using forkvm::Mapping;
using forkvm::SysError;
using forkvm::vmm::Kvm;

constexpr std::uint64_t kGuestMemSize = 0x10000;  // 64 KiB
constexpr std::uint64_t kCodeAddr = 0x1000;
constexpr std::uint16_t kPort = 0x10;

// Real-mode code: writes "fork" and then 0x20 + 0x22 (computed by the guest)
// to port 0x10, one byte per OUT, then halts.
const std::vector<std::uint8_t> kGuestCode = {
    0xba, 0x10, 0x00,  // mov dx, 0x10
    0xb0, 'f',  0xee,  // mov al, 'f'; out dx, al
    0xb0, 'o',  0xee,  // mov al, 'o'; out dx, al
    0xb0, 'r',  0xee,  // mov al, 'r'; out dx, al
    0xb0, 'k',  0xee,  // mov al, 'k'; out dx, al
    0xb0, 0x20,        // mov al, 0x20
    0x04, 0x22,        // add al, 0x22
    0xee,              // out dx, al
    0xf4,              // hlt
};

struct RunResult {
    std::vector<std::uint8_t> port_bytes;
    std::vector<std::uint32_t> exit_reasons;
};

// Runs `code` at kCodeAddr in real mode until HLT or any unexpected exit.
RunResult run_real_mode(const std::vector<std::uint8_t>& code) {
    Kvm kvm = Kvm::open();
    auto vm = kvm.create_vm();
    vm.set_tss_addr(0xfffbd000);
    vm.set_identity_map_addr(0xfffbc000);

    Mapping mem = Mapping::map(kGuestMemSize, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0, "mmap guest memory");
    std::memcpy(mem.bytes() + kCodeAddr, code.data(), code.size());
    vm.set_user_memory_region(0, 0, kGuestMemSize, mem.get());

    auto vcpu = vm.create_vcpu(0);
    auto sregs = vcpu.get_sregs();
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    vcpu.set_sregs(sregs);
    kvm_regs regs{};
    regs.rip = kCodeAddr;
    regs.rflags = 0x2;  // bit 1 is reserved and must be set
    vcpu.set_regs(regs);

    RunResult result;
    for (int step = 0; step < 64; ++step) {
        int err = vcpu.run();
        if (err == EINTR || err == EAGAIN) continue;
        if (err != 0) throw SysError("KVM_RUN", err);
        const kvm_run& run = vcpu.run_state();
        result.exit_reasons.push_back(run.exit_reason);
        if (run.exit_reason == KVM_EXIT_IO && run.io.direction == KVM_EXIT_IO_OUT && run.io.port == kPort &&
            run.io.size == 1) {
            const std::uint8_t* data = vcpu.io_data();
            result.port_bytes.insert(result.port_bytes.end(), data, data + run.io.count);
            continue;
        }
        break;  // HLT or anything unexpected ends the run
    }
    return result;
}

}  // namespace

TEST_CASE("kvm: real-mode guest writes known bytes to an I/O port and halts") {
    RunResult r = run_real_mode(kGuestCode);

    // Compared as strings so a failure prints both sides.
    const std::string expected_bytes = "fork\x42";
    CHECK(std::string(r.port_bytes.begin(), r.port_bytes.end()) == expected_bytes);

    std::vector<std::uint32_t> expected_exits(expected_bytes.size(), KVM_EXIT_IO);
    expected_exits.push_back(KVM_EXIT_HLT);
    REQUIRE(r.exit_reasons.size() == expected_exits.size());
    for (std::size_t i = 0; i < expected_exits.size(); ++i) {
        INFO("exit " << i << ": " << forkvm::vmm::exit_reason_name(r.exit_reasons[i]));
        CHECK(r.exit_reasons[i] == expected_exits[i]);
    }
}

TEST_CASE("kvm: system fd answers the stable API and reports capabilities") {
    Kvm kvm = Kvm::open();
    CHECK(kvm.api_version() == KVM_API_VERSION);
    CHECK(kvm.check_extension(KVM_CAP_USER_MEMORY) > 0);
    CHECK(kvm.vcpu_mmap_size() >= sizeof(kvm_run));
    auto cpuid = kvm.supported_cpuid();
    CHECK(!cpuid.entries.empty());
    CHECK(!kvm.msr_index_list().empty());

    // The flexible-array ioctls round-trip (their C++ header numbers are
    // wrong: vmm/kvm_abi.hpp). CPUID set on a vCPU reads back the same.
    auto vm = kvm.create_vm();
    auto vcpu = vm.create_vcpu(0);
    vcpu.set_cpuid(cpuid);
}

TEST_CASE("kvm: a failed ioctl names the request and errno") {
    Kvm kvm = Kvm::open();
    auto vm = kvm.create_vm();
    auto first = vm.create_vcpu(0);
    try {
        auto second = vm.create_vcpu(0);  // same id twice: EEXIST
        FAIL("creating vCPU 0 twice succeeded");
    } catch (const SysError& e) {
        CHECK(e.operation() == "KVM_CREATE_VCPU");
        CHECK(e.err() == EEXIST);
        CHECK(std::string(e.what()).find("KVM_CREATE_VCPU") != std::string::npos);
    }
}
