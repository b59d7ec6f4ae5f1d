#pragma once
// The declarative table of every configuration key. Adding a key means adding
// a field to Config and one entry in key_table.cpp; parsing, validation,
// --help, --print-config and the docs follow from the entry.

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "config/config.hpp"

namespace forkvm::config {

enum class KeyType {
    string,     // free text
    boolean,    // true/false
    integer,    // int within [min, max]
    size,       // bytes within [min, max]; "64MiB", "1G", plain integer
    duration,   // milliseconds within [min, max]; "500ms", "30s", "5m", plain ms
    list,       // list of strings; comma-separated in env and flags
    host_port,  // "host:port"
    path,       // file system path; must_exist checks it when non-empty
    choice,     // one of `choices`
};

// Where a key lives inside Config. A captureless lambda per key keeps the
// binding next to the key's declaration and type-checked by the compiler.
using StringField = std::string& (*)(Config&);
using BoolField = bool& (*)(Config&);
using IntField = int& (*)(Config&);
using SizeField = std::uint64_t& (*)(Config&);
using DurationField = std::chrono::milliseconds& (*)(Config&);
using ListField = std::vector<std::string>& (*)(Config&);
using Field = std::variant<StringField, BoolField, IntField, SizeField, DurationField, ListField>;

struct KeySpec {
    std::string_view name{};                      // dotted: "pool.min_warm"
    std::string_view env{};                       // "FORKVM_POOL_MIN_WARM"
    std::span<const std::string_view> aliases{};  // extra env names, e.g. FORKVM_LISTEN
    std::string_view flag{};                      // "--min-warm"
    KeyType type = KeyType::string;
    std::string_view default_value{};  // in the textual form
    std::string_view default_doc{};    // shown instead of default_value when computed
    std::string (*computed_default)() = nullptr;
    bool secret = false;
    std::string_view help{};
    Field field{};
    std::int64_t min = 0;  // integer / size (bytes) / duration (ms)
    std::int64_t max = 0;
    std::span<const std::string_view> choices{};
    bool must_exist = false;          // path: a non-empty value must name an existing file
    bool required = false;            // string/path: must not be empty
    std::size_t min_item_length = 0;  // list items / secret strings
};

std::span<const KeySpec> key_table();

// Lookups; nullptr when there is no such key.
const KeySpec* find_key(std::string_view dotted_name);
const KeySpec* find_key_by_env(std::string_view env_name);
const KeySpec* find_key_by_flag(std::string_view flag);

// "int 1..256", "size", "duration", "one of: a, b", ... for help and docs.
std::string type_description(const KeySpec& key);

// The default as documented (default_doc if set, else default_value).
std::string_view documented_default(const KeySpec& key);

}  // namespace forkvm::config
