#pragma once
// A minimal virtio 1.x PCI driver for tests: it programs a VirtioPciDevice
// through BAR0 exactly as Linux's virtio_pci does (feature negotiation,
// queue set-up with 32-bit halves, DRIVER_OK, notifications, ISR reads) and
// builds split-ring chains in guest memory by hand, so tests can also build
// the malformed ones a hostile guest would.

#include <cstdint>
#include <cstring>
#include <span>
#include <utility>
#include <vector>

#include "vmm/guest_memory.hpp"
#include "vmm/virtio/virtio_pci.hpp"

namespace forkvm::test {

class VirtioTestDriver {
public:
    using Device = vmm::VirtioPciDevice;
    struct Buffer {
        std::uint64_t gpa;
        std::uint32_t len;
        bool writable;
    };
    struct Queue {
        std::uint16_t size = 0;
        std::uint64_t desc = 0, avail = 0, used = 0;
        std::uint16_t avail_idx = 0;  // what the driver has published
        std::uint16_t used_seen = 0;  // used entries already collected
        std::uint16_t next_desc = 0;  // descriptors are handed out round robin
    };

    VirtioTestDriver(Device& device, const vmm::GuestMemory& memory) : device_(device), memory_(memory) {}

    template <typename T>
    void write(std::uint64_t offset, T value) {
        std::uint8_t b[sizeof(T)];
        std::memcpy(b, &value, sizeof b);
        device_.bar0_write(offset, std::span<const std::uint8_t>(b, sizeof b));
    }
    template <typename T>
    T read(std::uint64_t offset) {
        std::uint8_t b[sizeof(T)] = {};
        device_.bar0_read(offset, std::span<std::uint8_t>(b, sizeof b));
        T v;
        std::memcpy(&v, b, sizeof v);
        return v;
    }

    std::uint8_t status() { return read<std::uint8_t>(0x14); }
    void set_status(std::uint8_t s) { write<std::uint8_t>(0x14, s); }

    // ACKNOWLEDGE, DRIVER, the features, FEATURES_OK; returns the status read back.
    std::uint8_t negotiate(std::uint64_t features = Device::kFeatureVersion1) {
        set_status(0);
        set_status(Device::kAcknowledge);
        set_status(Device::kAcknowledge | Device::kDriver);
        write<std::uint32_t>(0x08, 0);
        write<std::uint32_t>(0x0c, static_cast<std::uint32_t>(features));
        write<std::uint32_t>(0x08, 1);
        write<std::uint32_t>(0x0c, static_cast<std::uint32_t>(features >> 32));
        set_status(Device::kAcknowledge | Device::kDriver | Device::kFeaturesOk);
        return status();
    }

    void setup_queue(std::uint16_t index, std::uint16_t size, std::uint64_t desc, std::uint64_t avail,
                     std::uint64_t used) {
        write<std::uint16_t>(0x16, index);
        write<std::uint16_t>(0x18, size);
        auto split = [&](std::uint64_t at, std::uint64_t v) {
            write<std::uint32_t>(at, static_cast<std::uint32_t>(v));
            write<std::uint32_t>(at + 4, static_cast<std::uint32_t>(v >> 32));
        };
        split(0x20, desc);
        split(0x28, avail);
        split(0x30, used);
        write<std::uint16_t>(0x1c, 1);
        if (queues_.size() <= index) queues_.resize(index + 1);
        queues_[index] = Queue{size, desc, avail, used, 0, 0, 0};
    }

    void driver_ok() {
        set_status(Device::kAcknowledge | Device::kDriver | Device::kFeaturesOk | Device::kDriverOk);
    }

    // Writes a chain's descriptors and publishes it; returns its head.
    std::uint16_t add_chain(std::uint16_t index, const std::vector<Buffer>& buffers, bool notify_now = true) {
        Queue& q = queues_.at(index);
        const std::uint16_t head = q.next_desc;
        for (std::size_t i = 0; i < buffers.size(); ++i) {
            const std::uint16_t d = static_cast<std::uint16_t>((head + i) % q.size);
            const bool last = i + 1 == buffers.size();
            const auto next = static_cast<std::uint16_t>((d + 1) % q.size);
            write_desc(index, d, buffers[i].gpa, buffers[i].len,
                       static_cast<std::uint16_t>((last ? 0 : 1) | (buffers[i].writable ? 2 : 0)), next);
        }
        q.next_desc = static_cast<std::uint16_t>((head + buffers.size()) % q.size);
        publish(index, head);
        if (notify_now) notify(index);
        return head;
    }

    void write_desc(std::uint16_t index, std::uint16_t d, std::uint64_t addr, std::uint32_t len,
                    std::uint16_t flags, std::uint16_t next) {
        const Queue& q = queues_.at(index);
        std::uint8_t raw[16];
        std::memcpy(raw, &addr, 8);
        std::memcpy(raw + 8, &len, 4);
        std::memcpy(raw + 12, &flags, 2);
        std::memcpy(raw + 14, &next, 2);
        (void)memory_.write(q.desc + 16ULL * d, raw);
    }

    // Puts `head` in the avail ring and bumps the index.
    void publish(std::uint16_t index, std::uint16_t head) {
        Queue& q = queues_.at(index);
        (void)memory_.write_obj(q.avail + 4 + 2ULL * (q.avail_idx % q.size), head);
        ++q.avail_idx;
        (void)memory_.write_obj(q.avail + 2, q.avail_idx);
    }
    void set_avail_idx(std::uint16_t index, std::uint16_t idx) {
        queues_.at(index).avail_idx = idx;
        (void)memory_.write_obj(queues_.at(index).avail + 2, idx);
    }
    void set_avail_flags(std::uint16_t index, std::uint16_t flags) {
        (void)memory_.write_obj(queues_.at(index).avail, flags);
    }

    void notify(std::uint16_t index) { write<std::uint16_t>(Device::kNotifyOffset + 4ULL * index, index); }
    std::uint8_t read_isr() { return read<std::uint8_t>(Device::kIsrOffset); }

    // Used entries published since the last call: {id, len}.
    std::vector<std::pair<std::uint32_t, std::uint32_t>> take_used(std::uint16_t index) {
        Queue& q = queues_.at(index);
        std::uint16_t idx = 0;
        std::uint8_t raw[2];
        (void)memory_.read(q.used + 2, raw);
        std::memcpy(&idx, raw, 2);
        std::vector<std::pair<std::uint32_t, std::uint32_t>> out;
        for (; q.used_seen != idx; ++q.used_seen) {
            std::uint8_t elem[8];
            (void)memory_.read(q.used + 4 + 8ULL * (q.used_seen % q.size), elem);
            std::uint32_t id = 0, len = 0;
            std::memcpy(&id, elem, 4);
            std::memcpy(&len, elem + 4, 4);
            out.emplace_back(id, len);
        }
        return out;
    }

    [[nodiscard]] const Queue& queue(std::uint16_t index) const { return queues_.at(index); }

private:
    Device& device_;
    const vmm::GuestMemory& memory_;
    std::vector<Queue> queues_;
};

}  // namespace forkvm::test
