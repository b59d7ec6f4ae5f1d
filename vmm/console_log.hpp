#pragma once
// The tail of a VM's kernel console: a bounded byte ring that keeps the last
// `capacity` bytes, plus a count of everything ever written.

#include <cstdint>
#include <deque>
#include <span>
#include <string>

namespace forkvm::vmm {

class ConsoleLog {
public:
    explicit ConsoleLog(std::size_t capacity = 256 * 1024) : capacity_(capacity) {}

    void append(std::span<const std::uint8_t> bytes);
    // The last min(max_bytes, stored) bytes.
    [[nodiscard]] std::string tail(std::size_t max_bytes) const;
    [[nodiscard]] std::uint64_t total_bytes() const noexcept { return total_; }

private:
    std::size_t capacity_;
    std::deque<std::uint8_t> bytes_;
    std::uint64_t total_ = 0;
};

}  // namespace forkvm::vmm
