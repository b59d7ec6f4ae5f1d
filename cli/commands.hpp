#pragma once
// The forkvm subcommands. Each takes the arguments after its name and returns
// the process exit status.

#include <span>

namespace forkvm::cli {

int bench(std::span<char*> args);  // bench fork
int kvm_info(std::span<char*> args);
int run(std::span<char*> args);
int serve(std::span<char*> args);     // the REST API server
int snapshot(std::span<char*> args);  // snapshot create | run
int version(std::span<char*> args);
int vmm_process(std::span<char*> args);

}  // namespace forkvm::cli
