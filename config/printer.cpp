// Everything generated from the key table for humans: --print-config JSON,
// --help text and the Markdown table in docs/configuration.md.

#include <nlohmann/json.hpp>
#include <string>

#include "config/config.hpp"
#include "config/key_table.hpp"
#include "config/value_parse.hpp"

namespace forkvm::config {

namespace {

using nlohmann::ordered_json;

ordered_json value_json(const KeySpec& key, Config& config, bool mask_secrets) {
    return std::visit(
        [&](auto field) -> ordered_json {
            const auto& value = field(config);
            using Value = std::remove_cvref_t<decltype(value)>;
            if constexpr (std::is_same_v<Value, std::vector<std::string>>) {
                if (mask_secrets && key.secret) {
                    // The count helps an operator check the keys were picked up,
                    // without revealing any of them.
                    return "*** (" + std::to_string(value.size()) + (value.size() == 1 ? " key)" : " keys)");
                }
                return value;
            } else if constexpr (std::is_same_v<Value, std::string>) {
                if (mask_secrets && key.secret && !value.empty()) return "***";
                return value;
            } else if constexpr (std::is_same_v<Value, std::uint64_t>) {
                return format_size(value);
            } else if constexpr (std::is_same_v<Value, std::chrono::milliseconds>) {
                return format_duration(value);
            } else {
                return value;  // int, bool
            }
        },
        key.field);
}

std::string placeholder(const KeySpec& key) {
    switch (key.type) {
        case KeyType::string: return "TEXT";
        case KeyType::boolean: return "[=BOOL]";
        case KeyType::integer: return "N";
        case KeyType::size: return "SIZE";
        case KeyType::duration: return "DURATION";
        case KeyType::list: return "A,B,...";
        case KeyType::host_port: return "HOST:PORT";
        case KeyType::path: return "PATH";
        case KeyType::choice: {
            std::string out;
            for (std::string_view c : key.choices) out += (out.empty() ? "" : "|") + std::string(c);
            return out;
        }
    }
    return "VALUE";
}

std::string env_names(const KeySpec& key, std::string_view quote) {
    std::string out = std::string(quote) + std::string(key.env) + std::string(quote);
    for (std::string_view alias : key.aliases)
        out += ", " + std::string(quote) + std::string(alias) + std::string(quote);
    return out;
}

}  // namespace

std::string to_json(const Config& config, bool mask_secrets) {
    Config copy = config;  // the field accessors take a mutable Config
    ordered_json root = ordered_json::object();
    for (const KeySpec& key : key_table()) {
        ordered_json* node = &root;
        std::string_view name = key.name;
        for (std::size_t dot = name.find('.'); dot != std::string_view::npos; dot = name.find('.')) {
            node = &(*node)[std::string(name.substr(0, dot))];
            name.remove_prefix(dot + 1);
        }
        (*node)[std::string(name)] = value_json(key, copy, mask_secrets);
    }
    return root.dump(2, ' ', false, ordered_json::error_handler_t::replace) + "\n";
}

std::string help_text() {
    std::string out =
        "Usage: forkvm serve [--config PATH] [--print-config] [--help] [FLAGS]\n"
        "\n"
        "Configuration is merged from, lowest precedence first: built-in defaults,\n"
        "the JSON file given by --config PATH (or FORKVM_CONFIG), FORKVM_*\n"
        "environment variables, and these flags (--flag VALUE or --flag=VALUE).\n"
        "--print-config prints the effective configuration (secrets masked) and exits.\n"
        "Sizes take B/KiB/MiB/GiB/TiB (K=1024); durations take ms/s/m/h/d (plain = ms).\n"
        "\n";
    for (const KeySpec& key : key_table()) {
        out += "  " + std::string(key.flag) + " " + placeholder(key) + "\n";
        out += "      " + std::string(key.help) + "\n";
        out += "      [" + std::string(key.name) + "; env " + env_names(key, "") + "; default ";
        const std::string_view def = documented_default(key);
        out += def.empty() ? std::string("none") : std::string(def);
        out += key.secret ? "; secret]\n" : "]\n";
    }
    return out;
}

std::string markdown_table() {
    std::string out =
        "| Key | Environment | Flag | Type | Default | Meaning |\n"
        "|-----|-------------|------|------|---------|---------|\n";
    for (const KeySpec& key : key_table()) {
        const std::string_view def = documented_default(key);
        out += "| `" + std::string(key.name) + "` | " + env_names(key, "`") + " | `" + std::string(key.flag) +
               "` | " + type_description(key) + (key.secret ? " (secret)" : "") + " | " +
               (def.empty()               ? std::string("(empty)")
                : key.default_doc.empty() ? "`" + std::string(def) + "`"
                                          : std::string(def)) +
               " | " + std::string(key.help) + " |\n";
    }
    return out;
}

}  // namespace forkvm::config
