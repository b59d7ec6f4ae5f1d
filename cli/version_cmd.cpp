#include <cstdio>

#include "cli/commands.hpp"

#ifndef FORKVM_VERSION
#error "FORKVM_VERSION must be defined by the build"
#endif

namespace forkvm::cli {

int version(std::span<char*> /*args*/) {
    std::printf("forkvm %s\n", FORKVM_VERSION);
    return 0;
}

}  // namespace forkvm::cli
