#pragma once
// The forkvm subcommands. Each takes the arguments after its name and returns
// the process exit status.

#include <span>

namespace forkvm::cli {

int kvm_info(std::span<char*> args);
int run(std::span<char*> args);
int version(std::span<char*> args);
int vmm_process(std::span<char*> args);

}  // namespace forkvm::cli
