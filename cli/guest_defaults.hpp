#pragma once
// Where `forkvm` finds the guest kernel and initramfs and its own binary
// (which it re-runs as `forkvm vmm` for each VM process).

#include <string>

namespace forkvm::cli {

// FORKVM_KERNEL, else the kernel of Debian's linux-image-amd64 found at build time.
std::string default_kernel();
// FORKVM_INITRD, else the rootfs.cpio.gz the build made.
std::string default_initrd();
// This executable's absolute path (/proc/self/exe).
std::string self_binary();

}  // namespace forkvm::cli
