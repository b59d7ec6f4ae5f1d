#pragma once
// OptionParser: the command-line parsing shared by the forkvm subcommands.
// Each command registers its options (flags, text values, bounded numbers)
// and says how many positional arguments come before the trailing command;
// the parser reports bad usage on stderr the same way for every command.

#include <cstdint>
#include <functional>
#include <limits>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace forkvm::cli {

struct ParsedArgs {
    std::optional<int> exit_status;        // set: end the command with it (0 after --help, 2 bad usage)
    std::vector<std::string> positionals;  // the leading positionals (up to the count asked for)
    std::vector<std::string> rest;         // everything after them (or after "--")
};

class OptionParser {
public:
    // `command` prefixes error messages ("forkvm run"); `usage` is printed for
    // --help (on stdout) and after bad usage (on stderr).
    OptionParser(std::string command, std::string usage);

    void flag(std::string name, bool& target);
    void text(std::string name, std::string& target);
    // An option whose value `apply` checks and stores; it prints its own
    // error and returns false for a bad value.
    void value(std::string name, std::function<bool(std::string_view value)> apply);
    template <class T>
    void number(std::string name, T& target, std::uint64_t max = std::numeric_limits<T>::max()) {
        add_number(std::move(name), max, [&target](std::uint64_t v) { target = static_cast<T>(v); });
    }
    // The same, for an option whose absence matters (target stays nullopt).
    template <class T>
    void number(std::string name, std::optional<T>& target,
                std::uint64_t max = std::numeric_limits<T>::max()) {
        add_number(std::move(name), max, [&target](std::uint64_t v) { target = static_cast<T>(v); });
    }

    // Options may appear anywhere before the rest. Up to `leading_positionals`
    // non-option arguments are taken as positionals; the next one (or
    // whatever follows "--") starts the rest.
    [[nodiscard]] ParsedArgs parse(std::span<char*> args, std::size_t leading_positionals) const;

    // Prints "<command>: <message>" and the usage on stderr; returns 2.
    int usage_error(std::string_view message) const;
    [[nodiscard]] const std::string& command() const noexcept { return command_; }

private:
    struct Option {
        std::string name;
        bool takes_value = false;
        std::function<bool(std::string_view value)> apply;  // false: bad value (already reported)
    };

    void add_number(std::string name, std::uint64_t max, std::function<void(std::uint64_t)> set);
    [[nodiscard]] const Option* find(std::string_view name) const;

    std::string command_;
    std::string usage_;
    std::vector<Option> options_;
};

// A decimal number without sign or spaces that fits 64 bits.
[[nodiscard]] std::optional<std::uint64_t> parse_u64(std::string_view text);

}  // namespace forkvm::cli
