// Merges defaults < config file < environment < flags into one Config,
// collecting every problem instead of stopping at the first.

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "config/config.hpp"
#include "config/key_table.hpp"
#include "config/suggest.hpp"
#include "config/value_parse.hpp"

namespace forkvm::config {

std::string Problem::to_string() const { return subject + " (from " + source + "): " + message; }

namespace {

std::string join_problems(const std::vector<Problem>& problems) {
    std::string out = "invalid configuration (" + std::to_string(problems.size()) + " problem" +
                      (problems.size() == 1 ? "" : "s") + "):";
    for (const Problem& p : problems) out += "\n  " + p.to_string();
    return out;
}

}  // namespace

ConfigError::ConfigError(std::vector<Problem> problems)
    : std::runtime_error(join_problems(problems)), problems_(std::move(problems)) {}

Environment environment_from(const char* const* envp) {
    Environment env;
    for (; envp && *envp; ++envp) {
        const std::string_view entry(*envp);
        const std::size_t eq = entry.find('=');
        if (eq == std::string_view::npos) continue;
        env.emplace(std::string(entry.substr(0, eq)), std::string(entry.substr(eq + 1)));
    }
    return env;
}

namespace {

using nlohmann::json;

constexpr std::string_view env_prefix = "FORKVM_";
constexpr std::string_view config_env = "FORKVM_CONFIG";
// FORKVM_* variables that belong to the tooling (scripts/with-kvm, test
// scaling knobs), not to the server; they must not be flagged as typos.
constexpr std::array<std::string_view, 2> foreign_env_prefixes = {"FORKVM_WITH_KVM_", "FORKVM_TEST_"};
constexpr std::array<std::string_view, 3> meta_flags = {"--config", "--print-config", "--help"};
constexpr std::string_view masked_prefix = "***";

// How an accepted value is shown in a problem: as written when short and
// plain, quoted and escaped otherwise, masked for secrets.
std::string display_value(const KeySpec& key, std::string_view raw) {
    if (key.secret) return raw.empty() ? "\"\"" : "***";
    const bool plain = !raw.empty() && raw.size() <= 64 && std::all_of(raw.begin(), raw.end(), [](char c) {
        return c > 0x20 && c < 0x7f && c != '"';
    });
    return plain ? std::string(raw) : quote_for_message(raw);
}

struct Origin {
    std::string source = "default";
    std::string shown;  // display_value of the effective value
    bool bad = false;   // the effective value (or an overridden one) was rejected
};

std::string range_text(const KeySpec& key, std::int64_t v) {
    switch (key.type) {
        case KeyType::size: return format_size(static_cast<std::uint64_t>(v));
        case KeyType::duration: return format_duration(std::chrono::milliseconds(v));
        default: return std::to_string(v);
    }
}

// A file value as shown in a problem. Containers are not serialised: they
// can be nested thousands deep, and nlohmann's dump() recurses.
std::string json_display(const nlohmann::json& value) {
    if (value.is_object()) return "{...}";
    if (value.is_array()) {
        const bool flat =
            value.size() <= 64 &&
            std::all_of(value.begin(), value.end(), [](const nlohmann::json& v) { return v.is_primitive(); });
        if (!flat) return "[...]";
    }
    return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

class Loader {
public:
    Loader() : origins_(key_table().size()) {}

    std::vector<Problem>& problems() { return problems_; }
    Config& config() { return config_; }

    void apply_defaults() {
        for (const KeySpec& key : key_table()) {
            const std::string value =
                key.computed_default ? key.computed_default() : std::string(key.default_value);
            apply_text(key, value, "default");
        }
    }

    void apply_file(std::string_view text, const std::string& label) {
        json root;
        try {
            root = json::parse(text.begin(), text.end());
        } catch (const json::exception& e) {
            // nlohmann names line and column (or the overflowing number); drop its "[json.exception...]"
            // prefix and bound it, since it quotes the offending input.
            std::string detail = e.what();
            const std::size_t close = detail.find("] ");
            if (close != std::string::npos) detail.erase(0, close + 2);
            if (detail.size() > 300) detail = detail.substr(0, 300) + "...";
            for (char& c : detail) {
                if (c < 0x20 || c > 0x7e) c = '?';  // it quotes raw input bytes
            }
            problems_.push_back({"config file", label, "malformed JSON: " + detail});
            return;
        }
        if (!root.is_object()) {
            problems_.push_back(
                {"config file", label, "must contain a JSON object, e.g. {\"server\": {...}}"});
            return;
        }
        walk(root, "", label);
    }

    void apply_environment(const Environment& env) {
        // Collected first, so a key given under its name and an alias can be compared.
        std::vector<std::vector<std::pair<std::string, std::string>>> per_key(key_table().size());
        for (const auto& entry : env) {
            const std::string& name = entry.first;
            const std::string& value = entry.second;
            if (!name.starts_with(env_prefix) || name == config_env) continue;
            if (std::any_of(foreign_env_prefixes.begin(), foreign_env_prefixes.end(),
                            [&](std::string_view p) { return name.starts_with(p); }))
                continue;
            if (const KeySpec* key = find_key_by_env(name)) {
                auto& entries = per_key[index(*key)];
                // The canonical name first: it wins when both are set alike.
                if (name == key->env)
                    entries.insert(entries.begin(), {name, value});
                else
                    entries.emplace_back(name, value);
                continue;
            }
            std::vector<std::string_view> names;
            for (const KeySpec& k : key_table()) {
                names.push_back(k.env);
                names.insert(names.end(), k.aliases.begin(), k.aliases.end());
            }
            names.push_back(config_env);
            problems_.push_back(
                {display_name(name), "environment", "unknown variable" + suggestion(name, names)});
        }
        for (const KeySpec& key : key_table()) {
            const auto& entries = per_key[index(key)];
            if (entries.empty()) continue;
            for (std::size_t i = 1; i < entries.size(); ++i) {
                if (entries[i].second != entries[0].second) {
                    problems_.push_back({std::string(key.name), entries[0].first + " and " + entries[i].first,
                                         "set to different values; set only one"});
                }
            }
            apply_text(key, entries[0].second, entries[0].first);
        }
    }

    struct FlagValue {
        const KeySpec* key;
        std::string flag;
        std::string value;
    };

    struct CommandLine {
        std::vector<FlagValue> values;
        std::optional<std::string> config_path;
        bool print_config = false;
        bool help = false;
    };

    CommandLine parse_args(const std::vector<std::string>& args) {
        CommandLine cl;
        for (std::size_t i = 0; i < args.size(); ++i) {
            const std::string& arg = args[i];
            if (arg == "--help" || arg == "-h") {
                cl.help = true;
                continue;
            }
            if (!arg.starts_with("--") || arg == "--") {
                problems_.push_back({quote_for_message(arg), "command line", "unexpected argument"});
                continue;
            }
            const std::size_t eq = arg.find('=');
            const std::string flag = arg.substr(0, eq);
            std::optional<std::string> inline_value;
            if (eq != std::string::npos) inline_value = arg.substr(eq + 1);

            if (flag == "--print-config" || flag == "--help") {
                if (inline_value) problems_.push_back({flag, "command line", "takes no value"});
                cl.print_config = cl.print_config || flag == "--print-config";
                cl.help = cl.help || flag == "--help";
                continue;
            }
            const KeySpec* key = find_key_by_flag(flag);
            if (!key && flag != "--config") {
                std::vector<std::string_view> flags(meta_flags.begin(), meta_flags.end());
                for (const KeySpec& k : key_table()) flags.push_back(k.flag);
                problems_.push_back(
                    {quote_for_message(flag), "command line", "unknown flag" + suggestion(flag, flags)});
                continue;
            }
            std::string value;
            if (inline_value) {
                value = *inline_value;
            } else if (key && key->type == KeyType::boolean) {
                value = "true";  // a bare boolean flag switches it on
            } else if (i + 1 < args.size() && !args[i + 1].starts_with("--")) {
                value = args[++i];
            } else {
                problems_.push_back({flag, "command line", "missing value"});
                continue;
            }
            if (key)
                cl.values.push_back({key, flag, std::move(value)});
            else
                cl.config_path = std::move(value);
        }
        return cl;
    }

    void apply_flags(const std::vector<FlagValue>& values) {
        for (const FlagValue& v : values) apply_text(*v.key, v.value, v.flag);
    }

    void check_cross_keys() {
        at_least("pool.max_warm", "pool.min_warm");
        at_least("sandbox.max_ttl", "sandbox.default_ttl");
        at_least("sandbox.max_sandboxes", "sandbox.max_per_key");
        at_least("jail.max_processes", "vm.vcpus");
        both_or_neither("server.tls_cert", "server.tls_key");
        both_or_neither("server.tls_key", "server.tls_cert");
    }

private:
    static std::size_t index(const KeySpec& key) {
        return static_cast<std::size_t>(&key - key_table().data());
    }

    static std::string display_name(std::string_view name) {
        const bool plain = name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
                               return c > 0x20 && c < 0x7f && c != '"';
                           });
        return plain ? std::string(name) : quote_for_message(name);
    }

    static std::string suggestion(std::string_view word, const std::vector<std::string_view>& candidates) {
        const auto match = closest_match(word, candidates);
        return match ? "; did you mean " + std::string(*match) + "?" : "";
    }

    void fail(const KeySpec& key, const std::string& message) {
        Origin& o = origins_[index(key)];
        o.bad = true;
        problems_.push_back({std::string(key.name) + " = " + o.shown, o.source, message});
    }

    void record(const KeySpec& key, std::string_view raw, std::string source) {
        Origin& o = origins_[index(key)];
        o.source = std::move(source);
        o.shown = display_value(key, raw);
    }

    // The single textual path every value takes (defaults, env, flags, and
    // file strings), so a value means the same wherever it is written.
    void apply_text(const KeySpec& key, std::string_view text, std::string source) {
        record(key, text, std::move(source));
        if (text.find('\0') != std::string_view::npos) return fail(key, "must not contain NUL characters");
        if (key.type == KeyType::list) return apply_list(key, split_list(text));
        if (key.secret && text.starts_with(masked_prefix)) {
            return fail(key, "is the masked value printed by --print-config; supply the real secret");
        }
        if (key.required && text.empty()) return fail(key, "must not be empty");
        std::string error;
        switch (key.type) {
            case KeyType::string:
                if (!text.empty() && text.size() < key.min_item_length) {
                    return fail(key,
                                "must be at least " + std::to_string(key.min_item_length) + " characters");
                }
                std::get<StringField>(key.field)(config_) = std::string(text);
                return;
            case KeyType::boolean: {
                const auto v = parse_bool(text, &error);
                if (!v) return fail(key, error);
                std::get<BoolField>(key.field)(config_) = *v;
                return;
            }
            case KeyType::integer: {
                const auto v = parse_int(text, &error);
                if (!v) return fail(key, error);
                if (*v < key.min || *v > key.max) return fail(key, out_of_range(key));
                std::get<IntField>(key.field)(config_) = static_cast<int>(*v);
                return;
            }
            case KeyType::size: {
                const auto v = parse_size(text, &error);
                if (!v) return fail(key, error);
                if (*v < static_cast<std::uint64_t>(key.min) || *v > static_cast<std::uint64_t>(key.max)) {
                    return fail(key, out_of_range(key));
                }
                std::get<SizeField>(key.field)(config_) = *v;
                return;
            }
            case KeyType::duration: {
                const auto v = parse_duration(text, &error);
                if (!v) return fail(key, error);
                if (v->count() < key.min || v->count() > key.max) return fail(key, out_of_range(key));
                std::get<DurationField>(key.field)(config_) = *v;
                return;
            }
            case KeyType::host_port:
                if (!valid_host_port(text, &error)) return fail(key, error);
                std::get<StringField>(key.field)(config_) = std::string(text);
                return;
            case KeyType::path:
                if (key.must_exist && !text.empty()) {
                    std::error_code ec;
                    const std::filesystem::path path(text);
                    if (!std::filesystem::exists(path, ec)) return fail(key, "no such file");
                    if (!std::filesystem::is_regular_file(path, ec)) return fail(key, "not a regular file");
                }
                std::get<StringField>(key.field)(config_) = std::string(text);
                return;
            case KeyType::choice:
                if (std::find(key.choices.begin(), key.choices.end(), text) == key.choices.end()) {
                    return fail(key, "must be " + type_description(key));
                }
                std::get<StringField>(key.field)(config_) = std::string(text);
                return;
            case KeyType::list: return;  // handled above
        }
    }

    void apply_list(const KeySpec& key, std::vector<std::string> items) {
        for (const std::string& item : items) {
            if (key.secret && item.starts_with(masked_prefix)) {
                return fail(key, "is the masked value printed by --print-config; supply the real secrets");
            }
            if (item.size() < key.min_item_length) {
                return fail(key, "every item must be at least " + std::to_string(key.min_item_length) +
                                     " characters (item " + std::to_string(&item - items.data() + 1) +
                                     " has " + std::to_string(item.size()) + ")");
            }
            if (item.find_first_of(std::string_view(",\0", 2)) != std::string::npos) {
                return fail(key, "items must not contain commas or NUL characters");
            }
        }
        std::vector<std::string> sorted = items;
        std::sort(sorted.begin(), sorted.end());
        if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end()) {
            return fail(key, "contains a duplicate item");
        }
        std::get<ListField>(key.field)(config_) = std::move(items);
    }

    static std::string out_of_range(const KeySpec& key) {
        return "must be between " + range_text(key, key.min) + " and " + range_text(key, key.max);
    }

    void apply_json(const KeySpec& key, const json& value, const std::string& label) {
        const auto text_of = [&](const json& v) -> std::string {
            // Strings as written; numbers in their decimal form.
            return v.is_string() ? v.get<std::string>() : v.dump();
        };
        const bool integer = value.is_number_integer();
        switch (key.type) {
            case KeyType::boolean:
                if (value.is_boolean()) return apply_text(key, value.get<bool>() ? "true" : "false", label);
                break;
            case KeyType::integer:
                if (integer) return apply_text(key, text_of(value), label);
                break;
            case KeyType::size:
            case KeyType::duration:
                if (integer || value.is_string()) return apply_text(key, text_of(value), label);
                break;
            case KeyType::list:
                if (value.is_string()) return apply_text(key, text_of(value), label);
                if (value.is_array() &&
                    std::all_of(value.begin(), value.end(), [](const json& v) { return v.is_string(); })) {
                    record(key, json_display(value), label);
                    std::vector<std::string> items;
                    for (const json& v : value) items.push_back(v.get<std::string>());
                    return apply_list(key, std::move(items));
                }
                break;
            case KeyType::string:
            case KeyType::host_port:
            case KeyType::path:
            case KeyType::choice:
                if (value.is_string()) return apply_text(key, text_of(value), label);
                break;
        }
        record(key, json_display(value), label);
        fail(key,
             "wrong JSON type " + std::string(value.type_name()) + ", expected " + json_expectation(key));
    }

    static std::string json_expectation(const KeySpec& key) {
        switch (key.type) {
            case KeyType::boolean: return "true or false";
            case KeyType::integer: return "an integer";
            case KeyType::size: return "an integer (bytes) or a string such as \"64MiB\"";
            case KeyType::duration: return "an integer (ms) or a string such as \"30s\"";
            case KeyType::list: return "an array of strings";
            default: return "a string";
        }
    }

    // Sections are the dotted prefixes of key names ("server", "pool").
    static bool is_section(std::string_view name) {
        return std::any_of(key_table().begin(), key_table().end(), [&](const KeySpec& k) {
            return k.name.size() > name.size() && k.name.starts_with(name) && k.name[name.size()] == '.';
        });
    }

    void walk(const json& object, const std::string& prefix, const std::string& label) {
        for (const auto& [member, value] : object.items()) {
            if (member.find('.') != std::string::npos || member.empty()) {
                problems_.push_back(
                    {display_name(prefix.empty() ? member : prefix + "." + member), label,
                     "bad key name; write nested objects, e.g. {\"pool\": {\"min_warm\": 2}}"});
                continue;
            }
            const std::string name = prefix.empty() ? member : prefix + "." + member;
            if (const KeySpec* key = find_key(name)) {
                apply_json(*key, value, label);
            } else if (is_section(name)) {
                if (value.is_object())
                    walk(value, name, label);
                else
                    problems_.push_back({name, label, "must be a JSON object (a section of keys)"});
            } else {
                std::vector<std::string_view> names;
                for (const KeySpec& k : key_table()) names.push_back(k.name);
                problems_.push_back({display_name(name), label, "unknown key" + suggestion(name, names)});
            }
        }
    }

    std::int64_t numeric(const KeySpec& key) {
        return std::visit(
            [&](auto field) -> std::int64_t {
                using Value = std::remove_cvref_t<decltype(field(config_))>;
                if constexpr (std::is_same_v<Value, int>)
                    return field(config_);
                else if constexpr (std::is_same_v<Value, std::uint64_t>)
                    return static_cast<std::int64_t>(field(config_));
                else if constexpr (std::is_same_v<Value, std::chrono::milliseconds>)
                    return field(config_).count();
                else
                    return 0;
            },
            key.field);
    }

    std::string describe_other(const KeySpec& other) {
        const Origin& o = origins_[index(other)];
        return std::string(other.name) + " (" + o.shown +
               (o.source == "default" ? "" : ", from " + o.source) + ")";
    }

    void at_least(std::string_view big_name, std::string_view small_name) {
        const KeySpec* big = find_key(big_name);
        const KeySpec* small = find_key(small_name);
        if (!big || !small || origins_[index(*big)].bad || origins_[index(*small)].bad) return;
        if (numeric(*big) < numeric(*small)) fail(*big, "must be >= " + describe_other(*small));
    }

    void both_or_neither(std::string_view name, std::string_view partner_name) {
        const KeySpec* key = find_key(name);
        const KeySpec* partner = find_key(partner_name);
        if (!key || !partner || origins_[index(*key)].bad || origins_[index(*partner)].bad) return;
        const bool set = !std::get<StringField>(key->field)(config_).empty();
        const bool partner_set = !std::get<StringField>(partner->field)(config_).empty();
        if (partner_set && !set) fail(*key, "must be set when " + describe_other(*partner) + " is set");
    }

    Config config_;
    std::vector<Origin> origins_;
    std::vector<Problem> problems_;
};

std::optional<std::string> read_config_file(const std::string& path, std::vector<Problem>& problems,
                                            const std::string& source) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        problems.push_back({"config file " + quote_for_message(path), source, "cannot be opened"});
        return std::nullopt;
    }
    std::string text(max_config_file_bytes + 1, '\0');
    in.read(text.data(), static_cast<std::streamsize>(text.size()));
    if (in.bad()) {
        problems.push_back({"config file " + quote_for_message(path), source, "cannot be read"});
        return std::nullopt;
    }
    text.resize(static_cast<std::size_t>(in.gcount()));
    if (text.size() > max_config_file_bytes) {
        problems.push_back({"config file " + quote_for_message(path), source,
                            "larger than " + format_size(max_config_file_bytes)});
        return std::nullopt;
    }
    return text;
}

LoadResult run(const std::vector<std::string>& args, const Environment& env,
               std::optional<std::string_view> file_text, std::string_view file_label) {
    Loader loader;
    auto cl = loader.parse_args(args);
    LoadResult result;
    result.print_config = cl.print_config;
    if (cl.help) {
        Loader defaults;
        defaults.apply_defaults();
        result.config = defaults.config();
        result.show_help = true;
        return result;
    }
    loader.apply_defaults();

    std::optional<std::string> read_text;
    std::string label(file_label);
    if (!file_text) {
        std::string source = "--config";
        std::optional<std::string> path = cl.config_path;
        if (!path) {
            if (auto it = env.find(config_env); it != env.end()) {
                path = it->second;
                source = config_env;
            }
        }
        if (path && path->empty()) {
            loader.problems().push_back({"config file", source, "empty path"});
        } else if (path) {
            read_text = read_config_file(*path, loader.problems(), source);
            result.config_file = *path;
            label = "config file " + quote_for_message(*path);
            if (read_text) file_text = *read_text;
        }
    }
    if (file_text) loader.apply_file(*file_text, label);
    loader.apply_environment(env);
    loader.apply_flags(cl.values);
    loader.check_cross_keys();
    if (!loader.problems().empty()) throw ConfigError(std::move(loader.problems()));
    result.config = std::move(loader.config());
    return result;
}

}  // namespace

LoadResult load(const std::vector<std::string>& args, const Environment& env) {
    return run(args, env, std::nullopt, {});
}

LoadResult load(int argc, const char* const* argv, const Environment& env) {
    std::vector<std::string> args;
    for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
    return load(args, env);
}

LoadResult load_with_file_text(std::string_view file_text, const Environment& env,
                               const std::vector<std::string>& args, std::string_view file_label) {
    return run(args, env, file_text, file_label);
}

}  // namespace forkvm::config
