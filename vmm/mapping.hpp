#pragma once
// An owned mmap()ed range: unmapped exactly once, movable, never copied.

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>

namespace forkvm {

class Mapping {
public:
    Mapping() noexcept = default;
    Mapping(void* addr, std::size_t size) noexcept : addr_(addr), size_(size) {}
    ~Mapping() { reset(); }

    Mapping(Mapping&& other) noexcept
        : addr_(std::exchange(other.addr_, nullptr)), size_(std::exchange(other.size_, 0)) {}
    Mapping& operator=(Mapping&& other) noexcept {
        if (this != &other) {
            reset();
            addr_ = std::exchange(other.addr_, nullptr);
            size_ = std::exchange(other.size_, 0);
        }
        return *this;
    }
    Mapping(const Mapping&) = delete;
    Mapping& operator=(const Mapping&) = delete;

    // mmap(nullptr, size, prot, flags, fd, offset) or SysError naming `what`.
    static Mapping map(std::size_t size, int prot, int flags, int fd, long offset, const char* what);

    [[nodiscard]] void* get() const noexcept { return addr_; }
    [[nodiscard]] std::uint8_t* bytes() const noexcept { return static_cast<std::uint8_t*>(addr_); }
    [[nodiscard]] std::size_t size() const noexcept { return size_; }
    [[nodiscard]] std::span<std::uint8_t> span() const noexcept { return {bytes(), size_}; }
    explicit operator bool() const noexcept { return addr_ != nullptr; }

    void reset() noexcept {
        if (addr_ != nullptr) ::munmap(addr_, size_);
        addr_ = nullptr;
        size_ = 0;
    }

private:
    void* addr_ = nullptr;
    std::size_t size_ = 0;
};

}  // namespace forkvm
