// forkvm kvm-info: does /dev/kvm work here, and what does it offer? The first
// thing to run on a new host (or inside scripts/with-kvm).

#include <cstdio>
#include <exception>
#include <string_view>

#include "cli/commands.hpp"
#include "vmm/kvm.hpp"

namespace forkvm::cli {
namespace {

struct Capability {
    long id;
    const char* name;
};

// The capabilities forkvm relies on (boot, snapshot, fork).
constexpr Capability kCapabilities[] = {
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
    {KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_CAP_SET_IDENTITY_MAP_ADDR"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_MP_STATE, "KVM_CAP_MP_STATE"},
    {KVM_CAP_VCPU_EVENTS, "KVM_CAP_VCPU_EVENTS"},
    {KVM_CAP_DEBUGREGS, "KVM_CAP_DEBUGREGS"},
    {KVM_CAP_XSAVE, "KVM_CAP_XSAVE"},
    {KVM_CAP_XCRS, "KVM_CAP_XCRS"},
    {KVM_CAP_ADJUST_CLOCK, "KVM_CAP_ADJUST_CLOCK"},
    {KVM_CAP_GET_TSC_KHZ, "KVM_CAP_GET_TSC_KHZ"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
    {KVM_CAP_NR_VCPUS, "KVM_CAP_NR_VCPUS"},
    {KVM_CAP_MAX_VCPUS, "KVM_CAP_MAX_VCPUS"},
};

}  // namespace

int kvm_info(std::span<char*> args) {
    const char* path = "/dev/kvm";
    for (std::string_view a : args) {
        if (a == "-h" || a == "--help") {
            std::printf(
                "usage: forkvm kvm-info [DEVICE]\n\nOpens DEVICE (default /dev/kvm) and prints "
                "the KVM API version,\nthe capabilities forkvm needs, and the CPUID/MSR counts.\n"
                "Exits 1 when KVM is unusable or a required capability is missing.\n");
            return 0;
        }
    }
    if (!args.empty()) path = args[0];

    try {
        auto kvm = vmm::Kvm::open(path);
        std::printf("%s: KVM API version %d\n", path, kvm.api_version());
        int missing = 0;
        for (const auto& cap : kCapabilities) {
            int value = kvm.check_extension(cap.id);
            std::printf("  %-32s %d\n", cap.name, value);
            if (value <= 0) ++missing;
        }
        std::printf("  supported CPUID entries          %zu\n", kvm.supported_cpuid().entries.size());
        std::printf("  MSRs to save                     %zu\n", kvm.msr_index_list().size());
        if (missing > 0) {
            std::fprintf(stderr, "forkvm kvm-info: %d required capabilities are missing\n", missing);
            return 1;
        }
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "forkvm kvm-info: %s\n", e.what());
        std::fprintf(stderr, "(no usable KVM here: run through scripts/with-kvm)\n");
        return 1;
    }
}

}  // namespace forkvm::cli
