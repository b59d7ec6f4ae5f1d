#include "cli/guest_defaults.hpp"

#include <unistd.h>

#include <cstdlib>
#include <vector>

#ifndef FORKVM_DEFAULT_KERNEL
#error "FORKVM_DEFAULT_KERNEL must be defined by the build"
#endif
#ifndef FORKVM_DEFAULT_INITRD
#error "FORKVM_DEFAULT_INITRD must be defined by the build"
#endif

namespace forkvm::cli {
namespace {

std::string env_or(const char* name, const char* fallback) {
    const char* v = std::getenv(name);
    return v != nullptr && *v != '\0' ? v : fallback;
}

}  // namespace

std::string default_kernel() { return env_or("FORKVM_KERNEL", FORKVM_DEFAULT_KERNEL); }
std::string default_initrd() { return env_or("FORKVM_INITRD", FORKVM_DEFAULT_INITRD); }

std::string self_binary() {
    std::vector<char> buf(4096);
    ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
    if (n <= 0) return {};
    return {buf.data(), static_cast<std::size_t>(n)};
}

}  // namespace forkvm::cli
