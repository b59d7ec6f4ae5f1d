#include "cli/subcommand.hpp"

#include <cstdio>

namespace forkvm::cli {
namespace {

void usage(std::FILE* out, std::string_view program, std::span<const Subcommand> table) {
    const int len = static_cast<int>(program.size());
    std::fprintf(out, "usage: %.*s COMMAND [ARGS...]\n\ncommands:\n", len, program.data());
    for (const auto& c : table) {
        std::fprintf(out, "  %-10.*s %.*s\n", static_cast<int>(c.name.size()), c.name.data(),
                     static_cast<int>(c.summary.size()), c.summary.data());
    }
    std::fprintf(out, "\n%.*s COMMAND --help shows a command's options.\n", len, program.data());
}

}  // namespace

int dispatch(std::string_view program, std::span<const Subcommand> table, std::span<char*> args) {
    if (args.empty()) {
        usage(stderr, program, table);
        return 2;
    }
    const std::string_view name = args[0];
    if (name == "-h" || name == "--help" || name == "help") {
        usage(stdout, program, table);
        return 0;
    }
    for (const auto& c : table) {
        if (c.name == name) return c.run(args.subspan(1));
    }
    std::fprintf(stderr, "%.*s: unknown command '%.*s'\n\n", static_cast<int>(program.size()), program.data(),
                 static_cast<int>(name.size()), name.data());
    usage(stderr, program, table);
    return 2;
}

}  // namespace forkvm::cli
