#pragma once
// Byte encodings the API needs: base64 (binary output, stdin_base64) and a
// UTF-8 validity check (output is sent as text only when it is valid UTF-8).

#include <optional>
#include <string>
#include <string_view>

namespace forkvm::server {

std::string base64_encode(std::string_view bytes);
// Standard alphabet with padding; whitespace is not allowed. nullopt on bad input.
std::optional<std::string> base64_decode(std::string_view text);

// Strict UTF-8 (no overlongs, no surrogates, nothing above U+10FFFF).
bool is_valid_utf8(std::string_view bytes) noexcept;

// Lowercase hex of the bytes.
std::string hex_encode(std::string_view bytes);

}  // namespace forkvm::server
