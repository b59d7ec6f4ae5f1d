#pragma once
// ioctl numbers for KVM structs that end in a flexible array.
//
// Debian 12's linux-libc-dev declares those arrays with __DECLARE_FLEX_ARRAY,
// which in C++ wraps them in a struct holding an empty struct: sizeof grows
// by 4 (kvm_cpuid2 is 12 bytes in C++, 8 in C). The size is encoded in the
// ioctl number, so the header's KVM_GET_SUPPORTED_CPUID & co. are wrong in
// C++ and the kernel answers EINVAL. These are the numbers a C compiler
// computes; the static_asserts pin them to the values measured with gcc.

#include <asm/ioctl.h>
#include <linux/kvm.h>

#include <cstddef>

namespace forkvm::vmm::abi {

// The C layout of the struct prefixes, without the flexible array member.
constexpr unsigned long kCpuid2Size = 8;    // nent, padding
constexpr unsigned long kMsrListSize = 4;   // nmsrs
constexpr unsigned long kMsrsSize = 8;      // nmsrs, pad
constexpr unsigned long kXsaveSize = 4096;  // region[1024]
constexpr unsigned long kSignalMaskSize = 4;

constexpr unsigned long kGetSupportedCpuid = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x05, kCpuid2Size);
constexpr unsigned long kSetCpuid2 = _IOC(_IOC_WRITE, KVMIO, 0x90, kCpuid2Size);
constexpr unsigned long kGetCpuid2 = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x91, kCpuid2Size);
constexpr unsigned long kGetMsrIndexList = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x02, kMsrListSize);
constexpr unsigned long kGetMsrs = _IOC(_IOC_READ | _IOC_WRITE, KVMIO, 0x88, kMsrsSize);
constexpr unsigned long kSetMsrs = _IOC(_IOC_WRITE, KVMIO, 0x89, kMsrsSize);
constexpr unsigned long kGetXsave = _IOC(_IOC_READ, KVMIO, 0xa4, kXsaveSize);
constexpr unsigned long kSetXsave = _IOC(_IOC_WRITE, KVMIO, 0xa5, kXsaveSize);
// The number encodes 4096 bytes, but the kernel copies KVM_CAP_XSAVE2's size.
constexpr unsigned long kGetXsave2 = _IOC(_IOC_READ, KVMIO, 0xcf, kXsaveSize);
constexpr unsigned long kSetSignalMask = _IOC(_IOC_WRITE, KVMIO, 0x8b, kSignalMaskSize);

static_assert(kGetSupportedCpuid == 0xc008ae05UL);
static_assert(kSetCpuid2 == 0x4008ae90UL);
static_assert(kGetCpuid2 == 0xc008ae91UL);
static_assert(kGetMsrIndexList == 0xc004ae02UL);
static_assert(kGetMsrs == 0xc008ae88UL);
static_assert(kSetMsrs == 0x4008ae89UL);
static_assert(kGetXsave == 0x9000aea4UL);
static_assert(kSetXsave == 0x5000aea5UL);
static_assert(kGetXsave2 == 0x9000aecfUL);
static_assert(kSetSignalMask == 0x4004ae8bUL);

// The C prefix sizes match the kernel's structs where no flex array is
// involved (guards against a header that changes them).
static_assert(offsetof(kvm_cpuid2, nent) == 0 && sizeof(kvm_cpuid_entry2) == 40);
static_assert(sizeof(kvm_msr_entry) == 16);

}  // namespace forkvm::vmm::abi
