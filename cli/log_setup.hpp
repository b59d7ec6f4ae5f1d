#pragma once
// The server's log: spdlog's default logger on stderr, as text or as one
// JSON object per line (config log.format), at config log.level.

#include <string>

namespace forkvm::cli {

// level: trace|debug|info|warn|error; format: text|json (validated by config).
void setup_logging(const std::string& level, const std::string& format);

}  // namespace forkvm::cli
