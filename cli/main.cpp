// forkvm: the server and its command-line tools, one binary.
// Subcommands dispatch from a table; each lives in its own file.

#include <span>
#include <string_view>

#include "cli/commands.hpp"
#include "cli/subcommand.hpp"

namespace {

constexpr forkvm::cli::Subcommand kCommands[] = {
    {"bench", "measure fork, restore and memory per clone", forkvm::cli::bench},
    {"kvm-info", "check /dev/kvm and print what this host's KVM offers", forkvm::cli::kvm_info},
    {"run", "boot a microVM, run a command in it, exit with its status", forkvm::cli::run},
    {"serve", "run the REST API server over a warm pool of VMs", forkvm::cli::serve},
    {"snapshot", "write a booted VM's snapshot, or run a command in a restored one", forkvm::cli::snapshot},
    {"version", "print the version", forkvm::cli::version},
    {"vmm", "(internal) the body of one VM process", forkvm::cli::vmm_process},
};

}  // namespace

int main(int argc, char** argv) {
    std::span<char*> args(argv + 1, argc > 1 ? static_cast<std::size_t>(argc - 1) : 0);
    static char version_name[] = "version";
    if (!args.empty() && std::string_view(args[0]) == "--version") args[0] = version_name;
    return forkvm::cli::dispatch("forkvm", kCommands, args);
}
