#pragma once
// One split virtqueue (virtio 1.x, §2.7) on the device side, over guest RAM
// the guest controls. Everything read from the rings is untrusted: the ring
// addresses are checked once when the driver enables the queue, every
// descriptor's buffer is checked against guest RAM before it is used, a chain
// is at most `size` descriptors long (so a loop in the `next` links ends),
// indices are checked against the ring size, and each descriptor is copied
// out of guest memory once, so a guest rewriting it meanwhile changes
// nothing the checks have seen. Any violation throws VirtqueueError; the
// transport then marks the device broken (docs/agent-protocol.md).
//
// Not offered, so refused when seen: indirect descriptors, event index.
// Not thread-safe: the device's lock covers it.

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "vmm/guest_memory.hpp"

namespace forkvm::vmm {

class VirtqueueError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// What the driver programs through the transport, and where the device is in
// the rings: all a snapshot needs (the rings themselves are in guest RAM).
struct VirtqueueState {
    std::uint16_t size = 0;
    bool enabled = false;
    std::uint64_t desc = 0;
    std::uint64_t avail = 0;
    std::uint64_t used = 0;
    std::uint16_t next_avail = 0;  // the next avail ring entry the device will take
    std::uint16_t next_used = 0;   // the used index the device will publish next
};

// The buffers of one descriptor chain, as host views into guest RAM:
// device-readable ones first, then device-writable ones (the spec's order).
struct DescriptorChain {
    std::uint16_t head = 0;
    std::vector<std::span<std::uint8_t>> readable;
    std::vector<std::span<std::uint8_t>> writable;
    std::uint64_t readable_bytes = 0;
    std::uint64_t writable_bytes = 0;
};

class Virtqueue {
public:
    static constexpr std::uint16_t kMaxSize = 256;

    Virtqueue(const GuestMemory& memory, std::uint16_t max_size);

    // Driver set-up, before enable(): the transport stores what it is given.
    void set_size(std::uint16_t size) { state_.size = size; }
    void set_desc(std::uint64_t gpa) { state_.desc = gpa; }
    void set_avail(std::uint64_t gpa) { state_.avail = gpa; }
    void set_used(std::uint64_t gpa) { state_.used = gpa; }
    // Checks the size (a power of two, at most max_size) and that each ring is
    // aligned and lies in guest RAM; throws VirtqueueError otherwise.
    void enable();
    void reset();  // back to the state at power-on: disabled, size max_size

    [[nodiscard]] const VirtqueueState& state() const noexcept { return state_; }
    [[nodiscard]] std::uint16_t max_size() const noexcept { return max_size_; }
    [[nodiscard]] bool enabled() const noexcept { return state_.enabled; }
    // Loads saved state (a snapshot, untrusted): an enabled queue is checked
    // as enable() checks it. Throws VirtqueueError.
    void load(const VirtqueueState& state);

    // Entries the driver has made available and the device has not taken.
    // Throws VirtqueueError when the driver's index runs more than `size`
    // ahead of the device.
    [[nodiscard]] std::uint16_t available() const;
    // Takes the next available chain (nullopt when there is none) and checks
    // it whole. Throws VirtqueueError on a malformed chain.
    std::optional<DescriptorChain> pop();
    // Puts the last popped chain back (the device could not take it yet).
    void unpop();
    // Returns a chain to the driver with `written` bytes written into it.
    void push_used(std::uint16_t head, std::uint32_t written);
    // False when the driver asked for no interrupts (VRING_AVAIL_F_NO_INTERRUPT).
    [[nodiscard]] bool wants_interrupt() const;

private:
    [[nodiscard]] std::uint16_t load_u16(std::uint8_t* at) const;
    void check_rings() const;

    const GuestMemory& memory_;
    std::uint16_t max_size_;
    VirtqueueState state_;
    // Host views of the three rings, set by enable()/load().
    std::uint8_t* desc_ = nullptr;
    std::uint8_t* avail_ = nullptr;
    std::uint8_t* used_ = nullptr;
};

}  // namespace forkvm::vmm
