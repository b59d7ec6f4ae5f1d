#pragma once
// Dispatching a command line to one of a table of subcommands, with the same
// usage listing and errors for `forkvm`, `forkvm snapshot`, `forkvm bench`.

#include <span>
#include <string_view>

namespace forkvm::cli {

struct Subcommand {
    std::string_view name;
    std::string_view summary;
    int (*run)(std::span<char*> args);  // the arguments after the name; returns the exit status
};

// args[0] names the subcommand. No name: usage on stderr, 2; -h, --help or
// help: usage on stdout, 0; an unknown name: an error and the usage, 2.
int dispatch(std::string_view program, std::span<const Subcommand> table, std::span<char*> args);

}  // namespace forkvm::cli
