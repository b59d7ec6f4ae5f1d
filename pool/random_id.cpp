#include "pool/random_id.hpp"

#include <cstdint>
#include <mutex>
#include <random>

namespace forkvm::pool {

std::string random_id(std::string_view prefix) {
    // One engine seeded once from the OS; a mutex is cheap next to a fork.
    static std::mutex mutex;
    static std::mt19937_64 engine = [] {
        std::random_device device;
        std::seed_seq seq{device(), device(), device(), device()};
        return std::mt19937_64(seq);
    }();
    std::uint64_t value = 0;
    {
        const std::lock_guard lock(mutex);
        value = engine();
    }
    static constexpr char digits[] = "0123456789abcdef";
    std::string id(prefix);
    for (int shift = 60; shift >= 0; shift -= 4) id.push_back(digits[(value >> shift) & 0xFU]);
    return id;
}

}  // namespace forkvm::pool
