#include "vmm/console_log.hpp"

#include <algorithm>

namespace forkvm::vmm {

void ConsoleLog::append(std::span<const std::uint8_t> bytes) {
    total_ += bytes.size();
    if (bytes.size() >= capacity_) {
        bytes_.assign(bytes.end() - static_cast<std::ptrdiff_t>(capacity_), bytes.end());
        return;
    }
    bytes_.insert(bytes_.end(), bytes.begin(), bytes.end());
    if (bytes_.size() > capacity_) {
        bytes_.erase(bytes_.begin(), bytes_.begin() + static_cast<std::ptrdiff_t>(bytes_.size() - capacity_));
    }
}

std::string ConsoleLog::tail(std::size_t max_bytes) const {
    std::size_t n = std::min(max_bytes, bytes_.size());
    return {bytes_.end() - static_cast<std::ptrdiff_t>(n), bytes_.end()};
}

}  // namespace forkvm::vmm
