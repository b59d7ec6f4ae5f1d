#pragma once
// Parsers for the textual form of every config value type. Environment
// variables, flags and string values in the JSON file all go through these,
// so "64MiB" means the same thing wherever it is written.
// Each returns nullopt and sets *error (a short phrase, no key name: the
// caller adds key and source) on bad input. All are strict: no surrounding
// whitespace, no signs where not allowed, no exponents, overflow is an error.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forkvm::config {

// Decimal integer with an optional leading '-'.
std::optional<std::int64_t> parse_int(std::string_view text, std::string* error);

// true/false, 1/0, yes/no, on/off (case-insensitive).
std::optional<bool> parse_bool(std::string_view text, std::string* error);

// Bytes: a plain integer, or an integer with a unit B, K, KB, KiB, M, MB, MiB,
// G, GB, GiB, T, TB, TiB (case-insensitive). All units are binary (K = 1024),
// as in most server configs, so "1G" and "1GiB" agree.
std::optional<std::uint64_t> parse_size(std::string_view text, std::string* error);

// Duration: a plain integer (milliseconds) or an integer with ms, s, m, h or d.
std::optional<std::chrono::milliseconds> parse_duration(std::string_view text, std::string* error);

// Comma-separated list; items are trimmed of spaces, empty items dropped.
std::vector<std::string> split_list(std::string_view text);

// "host:port" or "[v6addr]:port"; host is a DNS name or an IP literal, port 0..65535.
bool valid_host_port(std::string_view text, std::string* error);

// Canonical text for printing: the largest unit that divides exactly, so
// parse(format(x)) == x.
std::string format_size(std::uint64_t bytes);
std::string format_duration(std::chrono::milliseconds duration);

// Bounded, printable rendering of untrusted text for error messages.
std::string quote_for_message(std::string_view text);

}  // namespace forkvm::config
