#include "cli/option_parser.hpp"

#include <cstdio>
#include <utility>

namespace forkvm::cli {

std::optional<std::uint64_t> parse_u64(std::string_view text) {
    if (text.empty() || text.size() > 20) return std::nullopt;
    std::uint64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        const auto digit = static_cast<std::uint64_t>(c - '0');
        if (v > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) return std::nullopt;
        v = v * 10 + digit;
    }
    return v;
}

OptionParser::OptionParser(std::string command, std::string usage)
    : command_(std::move(command)), usage_(std::move(usage)) {}

void OptionParser::flag(std::string name, bool& target) {
    options_.push_back({std::move(name), false, [&target](std::string_view) {
                            target = true;
                            return true;
                        }});
}

void OptionParser::text(std::string name, std::string& target) {
    options_.push_back({std::move(name), true, [&target](std::string_view v) {
                            target = std::string(v);
                            return true;
                        }});
}

void OptionParser::value(std::string name, std::function<bool(std::string_view value)> apply) {
    options_.push_back({std::move(name), true, std::move(apply)});
}

void OptionParser::add_number(std::string name, std::uint64_t max, std::function<void(std::uint64_t)> set) {
    auto apply = [command = command_, name, max, set = std::move(set)](std::string_view v) {
        auto n = parse_u64(v);
        if (!n || *n > max) {
            std::fprintf(stderr, "%s: %s: '%.*s' is not a number in 0..%llu\n", command.c_str(), name.c_str(),
                         static_cast<int>(v.size()), v.data(), static_cast<unsigned long long>(max));
            return false;
        }
        set(*n);
        return true;
    };
    options_.push_back({std::move(name), true, std::move(apply)});
}

const OptionParser::Option* OptionParser::find(std::string_view name) const {
    for (const auto& o : options_) {
        if (o.name == name) return &o;
    }
    return nullptr;
}

int OptionParser::usage_error(std::string_view message) const {
    std::fprintf(stderr, "%s: %.*s\n%s", command_.c_str(), static_cast<int>(message.size()), message.data(),
                 usage_.c_str());
    return 2;
}

ParsedArgs OptionParser::parse(std::span<char*> args, std::size_t leading_positionals) const {
    ParsedArgs out;
    std::size_t i = 0;
    for (; i < args.size(); ++i) {
        const std::string_view a = args[i];
        if (a == "--") {
            ++i;
            break;
        }
        if (a.size() < 2 || a[0] != '-') {  // "-" alone is an argument, not an option
            if (out.positionals.size() == leading_positionals) break;
            out.positionals.emplace_back(a);
            continue;
        }
        if (a == "-h" || a == "--help") {
            std::fputs(usage_.c_str(), stdout);
            out.exit_status = 0;
            return out;
        }
        const Option* o = find(a);
        if (o == nullptr) {
            out.exit_status = usage_error("unknown option " + std::string(a));
            return out;
        }
        std::string_view value;
        if (o->takes_value) {
            if (i + 1 >= args.size()) {
                out.exit_status = usage_error(std::string(a) + " needs a value");
                return out;
            }
            value = args[++i];
        }
        if (!o->apply(value)) {
            out.exit_status = 2;
            return out;
        }
    }
    for (; i < args.size(); ++i) out.rest.emplace_back(args[i]);
    return out;
}

}  // namespace forkvm::cli
