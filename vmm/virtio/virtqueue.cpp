#include "vmm/virtio/virtqueue.hpp"

#include <atomic>
#include <bit>
#include <cstring>
#include <fmt/format.h>

namespace forkvm::vmm {
namespace {

constexpr std::uint16_t kDescNext = 1;
constexpr std::uint16_t kDescWrite = 2;
constexpr std::uint16_t kDescIndirect = 4;
constexpr std::uint16_t kAvailNoInterrupt = 1;

// Ring layouts (virtio 1.x §2.7): a 16-byte descriptor; avail = flags, idx,
// ring[size]; used = flags, idx, {id, len}[size]. No event-index words: the
// feature is not offered.
struct Descriptor {
    std::uint64_t addr;
    std::uint32_t len;
    std::uint16_t flags;
    std::uint16_t next;
};
static_assert(sizeof(Descriptor) == 16);

constexpr std::uint64_t desc_bytes(std::uint16_t size) { return 16ULL * size; }
constexpr std::uint64_t avail_bytes(std::uint16_t size) { return 4 + 2ULL * size; }
constexpr std::uint64_t used_bytes(std::uint16_t size) { return 4 + 8ULL * size; }

}  // namespace

Virtqueue::Virtqueue(const GuestMemory& memory, std::uint16_t max_size)
    : memory_(memory), max_size_(max_size) {
    if (max_size == 0 || max_size > kMaxSize || !std::has_single_bit(max_size)) {
        throw std::invalid_argument("Virtqueue: max size must be a power of two up to 256");
    }
    reset();
}

void Virtqueue::reset() {
    state_ = VirtqueueState{};
    state_.size = max_size_;
    desc_ = avail_ = used_ = nullptr;
}

void Virtqueue::check_rings() const {
    const std::uint16_t size = state_.size;
    if (size == 0 || size > max_size_ || !std::has_single_bit(size)) {
        throw VirtqueueError(fmt::format("queue size {} is not a power of two in [1, {}]", size, max_size_));
    }
    struct Ring {
        const char* name;
        std::uint64_t gpa;
        std::uint64_t bytes;
        std::uint64_t align;
    };
    for (const Ring& r : {Ring{"descriptor table", state_.desc, desc_bytes(size), 16},
                          Ring{"available ring", state_.avail, avail_bytes(size), 2},
                          Ring{"used ring", state_.used, used_bytes(size), 4}}) {
        if (r.gpa % r.align != 0) {
            throw VirtqueueError(fmt::format("{} at {:#x} is not {}-byte aligned", r.name, r.gpa, r.align));
        }
        if (!memory_.slice(r.gpa, r.bytes)) {
            throw VirtqueueError(
                fmt::format("{} [{:#x}, +{:#x}) is not in guest RAM", r.name, r.gpa, r.bytes));
        }
    }
}

void Virtqueue::enable() {
    check_rings();
    desc_ = memory_.slice(state_.desc, desc_bytes(state_.size))->data();
    avail_ = memory_.slice(state_.avail, avail_bytes(state_.size))->data();
    used_ = memory_.slice(state_.used, used_bytes(state_.size))->data();
    state_.enabled = true;
}

void Virtqueue::load(const VirtqueueState& state) {
    reset();
    const VirtqueueState old = state_;
    state_ = state;
    if (!state.enabled) {
        // Any size the driver wrote (checked if it enables the queue), but a
        // queue that never ran has not moved.
        if (state.next_avail != 0 || state.next_used != 0) {
            state_ = old;
            throw VirtqueueError("a disabled queue has non-zero ring positions");
        }
        return;
    }
    try {
        enable();
    } catch (...) {
        state_ = old;
        throw;
    }
}

std::uint16_t Virtqueue::load_u16(std::uint8_t* at) const {
    // Rings are aligned (checked at enable), so the guest's 16-bit stores are
    // single accesses; read them as such.
    return std::atomic_ref<std::uint16_t>(*reinterpret_cast<std::uint16_t*>(at))
        .load(std::memory_order_relaxed);
}

std::uint16_t Virtqueue::available() const {
    if (!state_.enabled) return 0;
    const std::uint16_t idx = load_u16(avail_ + 2);
    // Ring entries are read only after the index that published them.
    std::atomic_thread_fence(std::memory_order_acquire);
    const auto pending = static_cast<std::uint16_t>(idx - state_.next_avail);
    if (pending > state_.size) {
        throw VirtqueueError(
            fmt::format("available index {} is {} entries ahead of the device (queue size {})", idx, pending,
                        state_.size));
    }
    return pending;
}

std::optional<DescriptorChain> Virtqueue::pop() {
    if (available() == 0) return std::nullopt;
    const std::uint16_t size = state_.size;
    const std::uint16_t slot = state_.next_avail & (size - 1);
    DescriptorChain chain;
    chain.head = load_u16(avail_ + 4 + 2ULL * slot);
    if (chain.head >= size) {
        throw VirtqueueError(fmt::format("available ring entry {} names descriptor {} (queue size {})", slot,
                                         chain.head, size));
    }
    std::uint16_t index = chain.head;
    for (std::uint16_t count = 0;; ++count) {
        if (count == size) {
            throw VirtqueueError(fmt::format("descriptor chain from {} is longer than the queue ({}): a loop",
                                             chain.head, size));
        }
        Descriptor d;
        std::memcpy(&d, desc_ + 16ULL * index, sizeof d);  // one copy: the guest may rewrite it
        if (d.flags & kDescIndirect) {
            throw VirtqueueError(
                fmt::format("descriptor {}: indirect descriptors were not negotiated", index));
        }
        auto buffer = memory_.slice(d.addr, d.len);
        if (!buffer) {
            throw VirtqueueError(fmt::format("descriptor {}: buffer [{:#x}, +{:#x}) is not in guest RAM",
                                             index, d.addr, d.len));
        }
        if (d.flags & kDescWrite) {
            chain.writable.push_back(*buffer);
            chain.writable_bytes += d.len;
        } else {
            if (!chain.writable.empty()) {
                throw VirtqueueError(fmt::format(
                    "descriptor {}: a device-readable buffer after a device-writable one", index));
            }
            chain.readable.push_back(*buffer);
            chain.readable_bytes += d.len;
        }
        if (!(d.flags & kDescNext)) break;
        if (d.next >= size) {
            throw VirtqueueError(
                fmt::format("descriptor {}: next {} is past the queue size {}", index, d.next, size));
        }
        index = d.next;
    }
    ++state_.next_avail;
    return chain;
}

void Virtqueue::unpop() { --state_.next_avail; }

void Virtqueue::push_used(std::uint16_t head, std::uint32_t written) {
    const std::uint16_t slot = state_.next_used & (state_.size - 1);
    std::uint8_t* elem = used_ + 4 + 8ULL * slot;
    const std::uint32_t id = head;
    std::memcpy(elem, &id, 4);
    std::memcpy(elem + 4, &written, 4);
    ++state_.next_used;
    // The element must be visible before the index that publishes it.
    std::atomic_thread_fence(std::memory_order_release);
    std::atomic_ref<std::uint16_t>(*reinterpret_cast<std::uint16_t*>(used_ + 2))
        .store(state_.next_used, std::memory_order_relaxed);
}

bool Virtqueue::wants_interrupt() const {
    // Order the used index store before reading the driver's flags (§2.7.7).
    std::atomic_thread_fence(std::memory_order_seq_cst);
    return (load_u16(avail_) & kAvailNoInterrupt) == 0;
}

}  // namespace forkvm::vmm
