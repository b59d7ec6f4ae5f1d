#pragma once
// How much memory the host can still give: MemAvailable from /proc/meminfo.
// The manager refuses to start or fork a VM below a reserve, answering
// insufficient_memory (HTTP 503 with Retry-After), rather than letting the
// kernel's OOM killer pick a victim among running sandboxes.

#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>

namespace forkvm::pool {

// MemAvailable in bytes parsed from the text of /proc/meminfo; nullopt if
// the line is missing or malformed.
std::optional<std::uint64_t> parse_mem_available(std::string_view meminfo);

// Reads /proc/meminfo; nullopt if it cannot be read.
std::optional<std::uint64_t> host_mem_available();

// Injectable for tests: returns MemAvailable in bytes (nullopt = unknown,
// which never blocks anything).
using MemoryProbe = std::function<std::optional<std::uint64_t>()>;

}  // namespace forkvm::pool
