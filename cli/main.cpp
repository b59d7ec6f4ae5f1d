// forkvm: the server and its command-line tools, one binary.
// Subcommands dispatch from a table; each lives in its own file.

#include <cstdio>
#include <cstring>
#include <span>
#include <string_view>

#include "cli/commands.hpp"

namespace {

struct Command {
    std::string_view name;
    std::string_view summary;
    int (*run)(std::span<char*> args);
};

constexpr Command kCommands[] = {
    {"kvm-info", "check /dev/kvm and print what this host's KVM offers", forkvm::cli::kvm_info},
    {"run", "boot a microVM, run a command in it, exit with its status", forkvm::cli::run},
    {"version", "print the version", forkvm::cli::version},
    {"vmm", "(internal) the body of one VM process", forkvm::cli::vmm_process},
};

void usage(std::FILE* out) {
    std::fprintf(out, "usage: forkvm COMMAND [ARGS...]\n\ncommands:\n");
    for (const auto& c : kCommands) {
        std::fprintf(out, "  %-10.*s %.*s\n", static_cast<int>(c.name.size()), c.name.data(),
                     static_cast<int>(c.summary.size()), c.summary.data());
    }
    std::fprintf(out, "\nforkvm COMMAND --help shows a command's options.\n");
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    std::string_view name = argv[1];
    if (name == "-h" || name == "--help" || name == "help") {
        usage(stdout);
        return 0;
    }
    if (name == "--version") name = "version";
    for (const auto& c : kCommands) {
        if (c.name == name) return c.run(std::span<char*>(argv + 2, static_cast<std::size_t>(argc - 2)));
    }
    std::fprintf(stderr, "forkvm: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
