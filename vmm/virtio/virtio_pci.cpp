#include "vmm/virtio/virtio_pci.hpp"

#include <algorithm>
#include <array>
#include <cstring>
#include <fmt/format.h>
#include <utility>

namespace forkvm::vmm {
namespace {

constexpr std::uint16_t kVirtioVendor = 0x1af4;
constexpr std::uint16_t kModernDeviceBase = 0x1040;  // PCI device ID = 0x1040 + virtio device type
constexpr std::uint8_t kCapVendor = 0x09;
constexpr std::uint8_t kCapCommon = 1, kCapNotify = 2, kCapIsr = 3, kCapDevice = 4;
constexpr std::uint16_t kNoVector = 0xffff;  // VIRTIO_MSI_NO_VECTOR
constexpr std::size_t kMaxBrokenReason = 1024;

// struct virtio_pci_cap (+ notify_off_multiplier for the notify capability).
std::vector<std::uint8_t> virtio_cap(std::uint8_t type, std::uint64_t offset, std::uint64_t length,
                                     std::optional<std::uint32_t> multiplier = std::nullopt) {
    std::vector<std::uint8_t> cap(multiplier ? 20 : 16, 0);
    cap[0] = kCapVendor;
    cap[2] = static_cast<std::uint8_t>(cap.size());  // cap_len
    cap[3] = type;
    cap[4] = 0;  // BAR0
    const auto off = static_cast<std::uint32_t>(offset), len = static_cast<std::uint32_t>(length);
    std::memcpy(cap.data() + 8, &off, 4);
    std::memcpy(cap.data() + 12, &len, 4);
    if (multiplier) std::memcpy(cap.data() + 16, &*multiplier, 4);
    return cap;
}

PciIdentity identity(std::uint16_t device_type, std::uint32_t pci_class, std::uint8_t irq) {
    PciIdentity id;
    id.vendor = kVirtioVendor;
    id.device = static_cast<std::uint16_t>(kModernDeviceBase + device_type);
    id.class_code = pci_class;
    id.revision = 1;  // modern-only device
    id.subsystem_vendor = kVirtioVendor;
    id.subsystem = static_cast<std::uint16_t>(kModernDeviceBase + device_type);
    id.interrupt_line = irq;
    id.interrupt_pin = true;
    return id;
}

template <typename T>
void put(std::array<std::uint8_t, VirtioPciDevice::kCommonSize>& image, std::size_t at, T value) {
    std::memcpy(image.data() + at, &value, sizeof value);
}

void save_queue(ByteWriter& w, const VirtqueueState& q) {
    w.u16(q.size);
    w.u8(q.enabled ? 1 : 0);
    w.u64(q.desc);
    w.u64(q.avail);
    w.u64(q.used);
    w.u16(q.next_avail);
    w.u16(q.next_used);
}

VirtqueueState load_queue(ByteReader& r) {
    VirtqueueState q;
    q.size = r.u16("queue size");
    q.enabled = r.boolean("queue enabled");
    q.desc = r.u64("descriptor table address");
    q.avail = r.u64("available ring address");
    q.used = r.u64("used ring address");
    q.next_avail = r.u16("next available index");
    q.next_used = r.u16("next used index");
    return q;
}

}  // namespace

VirtioPciDevice::VirtioPciDevice(const GuestMemory& memory, std::uint16_t device_type,
                                 std::uint32_t pci_class, std::uint32_t bar0_address, std::uint8_t irq,
                                 std::uint16_t queue_count, std::uint16_t queue_size,
                                 VirtioPciCallbacks callbacks)
    : memory_(memory),
      device_type_(device_type),
      config_(identity(device_type, pci_class, irq), bar0_address, kBarSize),
      callbacks_(std::move(callbacks)) {
    config_.add_capability(virtio_cap(kCapCommon, kCommonOffset, kCommonSize));
    config_.add_capability(virtio_cap(kCapNotify, kNotifyOffset, kNotifyMultiplier * queue_count,
                                      std::uint32_t{kNotifyMultiplier}));
    config_.add_capability(virtio_cap(kCapIsr, kIsrOffset, kIsrSize));
    config_.add_capability(virtio_cap(kCapDevice, kDeviceOffset, kDeviceSize));
    queues_.reserve(queue_count);
    for (std::uint16_t i = 0; i < queue_count; ++i) queues_.emplace_back(memory_, queue_size);
}

void VirtioPciDevice::config_read(std::size_t offset, std::span<std::uint8_t> data) {
    std::lock_guard lock(mu_);
    config_.read(offset, data);
}

void VirtioPciDevice::config_write(std::size_t offset, std::span<const std::uint8_t> data) {
    std::lock_guard lock(mu_);
    config_.write(offset, data);
    update_irq();  // the INTx disable bit may have changed
}

PciFunction::Window VirtioPciDevice::bar0_window() const {
    std::lock_guard lock(mu_);
    if (!config_.decodes_memory()) return {};
    return {config_.bar0_address(), config_.bar0_size()};
}

void VirtioPciDevice::bar0_read(std::uint64_t offset, std::span<std::uint8_t> data) {
    std::lock_guard lock(mu_);
    std::ranges::fill(data, 0);
    if (offset >= kCommonOffset && offset + data.size() <= kCommonOffset + kCommonSize) {
        common_read(offset - kCommonOffset, data);
    } else if (offset == kIsrOffset) {
        data[0] = isr_;  // reading the ISR byte acknowledges the interrupt
        isr_ = 0;
        ++isr_reads_;
        update_irq();
    } else if (offset >= kDeviceOffset && offset + data.size() <= kDeviceOffset + kDeviceSize) {
        read_device_config(offset - kDeviceOffset, data);
    }
}

void VirtioPciDevice::bar0_write(std::uint64_t offset, std::span<const std::uint8_t> data) {
    std::lock_guard lock(mu_);
    std::uint64_t value = 0;
    std::memcpy(&value, data.data(), std::min(data.size(), sizeof value));
    if (offset >= kCommonOffset && offset + data.size() <= kCommonOffset + kCommonSize) {
        guarded([&] { common_write(offset - kCommonOffset, value, data.size()); });
    } else if (offset >= kNotifyOffset && offset < kNotifyOffset + kNotifyMultiplier * queues_.size()) {
        const auto queue = static_cast<std::uint16_t>((offset - kNotifyOffset) / kNotifyMultiplier);
        if (live_queue(queue)) guarded([&] { on_queue_notify(queue); });
    }
    // Writes elsewhere (the ISR, the device configuration) change nothing.
}

void VirtioPciDevice::common_read(std::uint64_t offset, std::span<std::uint8_t> data) {
    std::array<std::uint8_t, kCommonSize> image{};
    const std::uint64_t offered = offered_features();
    put<std::uint32_t>(image, 0x00, device_feature_select_);
    put<std::uint32_t>(image, 0x04,
                       device_feature_select_ < 2
                           ? static_cast<std::uint32_t>(offered >> (32 * device_feature_select_))
                           : 0);
    put<std::uint32_t>(image, 0x08, driver_feature_select_);
    put<std::uint32_t>(image, 0x0c,
                       driver_feature_select_ < 2
                           ? static_cast<std::uint32_t>(driver_features_ >> (32 * driver_feature_select_))
                           : 0);
    put<std::uint16_t>(image, 0x10, kNoVector);
    put<std::uint16_t>(image, 0x12, static_cast<std::uint16_t>(queues_.size()));
    image[0x14] = status_;
    image[0x15] = 0;  // config generation: the device configuration never changes
    put<std::uint16_t>(image, 0x16, queue_select_);
    if (queue_select_ < queues_.size()) {
        const VirtqueueState& q = queues_[queue_select_].state();
        put<std::uint16_t>(image, 0x18, q.size);
        put<std::uint16_t>(image, 0x1a, kNoVector);
        put<std::uint16_t>(image, 0x1c, q.enabled ? 1 : 0);
        put<std::uint16_t>(image, 0x1e, queue_select_);  // notify offset, in multiples of kNotifyMultiplier
        put<std::uint64_t>(image, 0x20, q.desc);
        put<std::uint64_t>(image, 0x28, q.avail);
        put<std::uint64_t>(image, 0x30, q.used);
    }
    std::memcpy(data.data(), image.data() + offset, data.size());
}

void VirtioPciDevice::common_write(std::uint64_t offset, std::uint64_t value, std::size_t size) {
    const auto v32 = static_cast<std::uint32_t>(value);
    Virtqueue* q = queue_select_ < queues_.size() ? &queues_[queue_select_] : nullptr;
    // Ring addresses: 64-bit fields, written whole or as two 32-bit halves,
    // only while the queue is disabled.
    auto set_half = [&](std::uint64_t field, std::uint64_t current, auto setter) {
        if (!q || q->enabled()) return;
        if (offset == field && size == 8) {
            setter(value);
        } else if (offset == field && size == 4) {
            setter((current & ~0xffffffffULL) | v32);
        } else if (offset == field + 4 && size == 4) {
            setter((current & 0xffffffffULL) | (std::uint64_t{v32} << 32));
        }
    };
    switch (offset) {
        case 0x00:
            if (size == 4) device_feature_select_ = v32;
            return;
        case 0x08:
            if (size == 4) driver_feature_select_ = v32;
            return;
        case 0x0c:
            if (size == 4 && driver_feature_select_ < 2 && !(status_ & kFeaturesOk)) {
                const unsigned shift = 32 * driver_feature_select_;
                driver_features_ =
                    (driver_features_ & ~(0xffffffffULL << shift)) | (std::uint64_t{v32} << shift);
            }
            return;
        case 0x14:
            if (size == 1) set_status(static_cast<std::uint8_t>(value));
            return;
        case 0x16:
            if (size == 2) queue_select_ = static_cast<std::uint16_t>(value);
            return;
        case 0x18:
            if (size == 2 && q && !q->enabled()) q->set_size(static_cast<std::uint16_t>(value));
            return;
        case 0x1c:
            if (size == 2 && q && value == 1 && !q->enabled() && !broken_) q->enable();
            return;
        default: break;
    }
    if (!q) return;
    const VirtqueueState& s = q->state();
    if (offset == 0x20 || offset == 0x24) set_half(0x20, s.desc, [&](std::uint64_t a) { q->set_desc(a); });
    if (offset == 0x28 || offset == 0x2c) set_half(0x28, s.avail, [&](std::uint64_t a) { q->set_avail(a); });
    if (offset == 0x30 || offset == 0x34) set_half(0x30, s.used, [&](std::uint64_t a) { q->set_used(a); });
    // MSI-X vectors (none), notify data and queue reset are not offered.
}

void VirtioPciDevice::set_status(std::uint8_t status) {
    if (status == 0) {
        reset();
        return;
    }
    if ((status & kFeaturesOk) && !(status_ & kFeaturesOk)) {
        const std::uint64_t offered = offered_features();
        // The driver re-reads the status: FEATURES_OK not kept = refused.
        if ((driver_features_ & ~offered) != 0 || !(driver_features_ & kFeatureVersion1))
            status = static_cast<std::uint8_t>(status & ~kFeaturesOk);
    }
    const bool became_ok = (status & kDriverOk) && !(status_ & kDriverOk);
    // DEVICE_NEEDS_RESET is the device's to set (fail()), never the driver's.
    status_ = static_cast<std::uint8_t>((status & ~kNeedsReset) | (status_ & kNeedsReset));
    if (became_ok && (status_ & kFeaturesOk)) {
        // Buffers the driver added before DRIVER_OK are looked at now.
        for (std::uint16_t i = 0; i < queues_.size(); ++i) {
            if (live_queue(i)) on_queue_notify(i);
        }
    } else if (became_ok) {
        fail("driver set DRIVER_OK without FEATURES_OK");
    }
}

void VirtioPciDevice::reset() {
    for (auto& q : queues_) q.reset();
    device_feature_select_ = driver_feature_select_ = 0;
    driver_features_ = 0;
    status_ = 0;
    queue_select_ = 0;
    isr_ = 0;
    broken_.reset();
    on_reset();
    update_irq();
}

const Virtqueue* VirtioPciDevice::live_queue(std::uint16_t index) const {
    if (broken_ || !(status_ & kDriverOk) || index >= queues_.size() || !queues_[index].enabled())
        return nullptr;
    return &queues_[index];
}

Virtqueue* VirtioPciDevice::live_queue(std::uint16_t index) {
    return const_cast<Virtqueue*>(std::as_const(*this).live_queue(index));
}

void VirtioPciDevice::signal_used(Virtqueue& queue) {
    if (!queue.wants_interrupt()) return;
    isr_ |= 1;
    update_irq();
}

void VirtioPciDevice::fail(const std::string& reason) {
    if (broken_) return;
    broken_ = reason.substr(0, kMaxBrokenReason);
    status_ |= kNeedsReset;
    if (callbacks_.on_broken) callbacks_.on_broken(*broken_);
}

void VirtioPciDevice::update_irq() {
    const bool level = isr_ != 0 && !(config_.command() & PciConfigSpace::kCommandIntxDisable);
    if (level == irq_level_) return;
    irq_level_ = level;
    if (callbacks_.set_irq) callbacks_.set_irq(level);
}

void VirtioPciDevice::read_device_config(std::uint64_t, std::span<std::uint8_t> data) const {
    std::ranges::fill(data, 0);
}

bool VirtioPciDevice::driver_ok() const {
    std::lock_guard lock(mu_);
    return (status_ & kDriverOk) != 0 && !broken_;
}

std::optional<std::string> VirtioPciDevice::broken_reason() const {
    std::lock_guard lock(mu_);
    return broken_;
}

bool VirtioPciDevice::retrigger_stalled_irq() {
    std::lock_guard lock(mu_);
    const bool stalled = irq_level_ && isr_reads_ == isr_reads_at_last_check_;
    isr_reads_at_last_check_ = isr_reads_;
    if (!stalled || !callbacks_.set_irq) return false;
    callbacks_.set_irq(false);
    callbacks_.set_irq(true);
    ++irq_retriggers_;
    return true;
}

std::string VirtioPciDevice::describe_transport() const {
    std::lock_guard lock(mu_);
    std::string out = fmt::format("status {:#x} isr {} irq {} retriggers {}", status_, isr_,
                                  irq_level_ ? "high" : "low", irq_retriggers_);
    for (std::size_t i = 0; i < queues_.size(); ++i) {
        const VirtqueueState& q = queues_[i].state();
        std::uint16_t avail_idx = 0, avail_flags = 0, used_idx = 0;
        if (q.enabled) {
            (void)memory_.read(q.avail, std::span(reinterpret_cast<std::uint8_t*>(&avail_flags), 2));
            (void)memory_.read(q.avail + 2, std::span(reinterpret_cast<std::uint8_t*>(&avail_idx), 2));
            (void)memory_.read(q.used + 2, std::span(reinterpret_cast<std::uint8_t*>(&used_idx), 2));
        }
        out += fmt::format("; q{}: {} avail {} flags {} next_avail {} used {}", i, q.enabled ? "on" : "off",
                           avail_idx, avail_flags, q.next_avail, used_idx);
    }
    if (broken_) out += "; broken: " + *broken_;
    return out;
}

std::uint64_t VirtioPciDevice::irq_retriggers() const {
    std::lock_guard lock(mu_);
    return irq_retriggers_;
}

std::vector<std::uint8_t> VirtioPciDevice::save_state() const {
    std::lock_guard lock(mu_);
    ByteWriter w;
    w.u8(kStateVersion);
    w.u16(device_type_);
    w.bytes(config_.bytes());
    w.u32(device_feature_select_);
    w.u32(driver_feature_select_);
    w.u64(driver_features_);
    w.u8(status_);
    w.u16(queue_select_);
    w.u8(isr_);
    w.u8(broken_ ? 1 : 0);
    w.length_prefixed(broken_.value_or(std::string()));
    w.u16(static_cast<std::uint16_t>(queues_.size()));
    for (const auto& q : queues_) save_queue(w, q.state());
    save_device(w);
    return std::move(w).take();
}

void VirtioPciDevice::load_state(std::span<const std::uint8_t> blob) {
    std::lock_guard lock(mu_);
    const std::string name = fmt::format("virtio-pci device {}", device_type_);
    ByteReader r(blob, name);
    r.expect_version(kStateVersion);
    if (r.u16("device type") != device_type_) r.fail("saved for another device type");
    const auto config = r.bytes(PciConfigSpace::kSize, "PCI config space");
    const std::uint32_t device_feature_select = r.u32("device feature select");
    const std::uint32_t driver_feature_select = r.u32("driver feature select");
    const std::uint64_t driver_features = r.u64("driver features");
    const std::uint8_t status = r.u8("status");
    const std::uint16_t queue_select = r.u16("queue select");
    const std::uint8_t isr = r.u8("ISR");
    const bool broken = r.boolean("broken");
    const auto reason = r.length_prefixed(kMaxBrokenReason, "broken reason");
    if (r.u16("queue count") != queues_.size()) r.fail("queue count differs from the device's");
    if (isr > 3) r.fail("ISR has reserved bits set");
    if (broken != ((status & kNeedsReset) != 0)) r.fail("broken flag and DEVICE_NEEDS_RESET disagree");
    if (!broken && !reason.empty()) r.fail("a broken reason on a device that is not broken");
    if ((status & kFeaturesOk) && (driver_features & ~offered_features()) != 0) {
        r.fail("driver features not offered by the device");
    }
    std::vector<Virtqueue> queues;
    queues.reserve(queues_.size());
    for (std::size_t i = 0; i < queues_.size(); ++i) {
        queues.emplace_back(memory_, queues_[i].max_size());
        try {
            queues.back().load(load_queue(r));
        } catch (const VirtqueueError& e) {
            r.fail(fmt::format("queue {}: {}", i, e.what()));
        }
    }
    load_device(r);  // checks the end of the blob, then commits the device type's state
    config_.load(config.first<PciConfigSpace::kSize>());
    device_feature_select_ = device_feature_select;
    driver_feature_select_ = driver_feature_select;
    driver_features_ = driver_features;
    status_ = status;
    queue_select_ = queue_select;
    isr_ = isr;
    broken_.reset();
    if (broken) broken_ = std::string(reason.begin(), reason.end());
    for (std::size_t i = 0; i < queues_.size(); ++i) queues_[i].load(queues[i].state());
    // Re-drive the line with the loaded level: a new VM's PIC starts from
    // the saved irqchip state, which has the pin as it was.
    irq_level_ = !(isr_ != 0 && !(config_.command() & PciConfigSpace::kCommandIntxDisable));
    update_irq();
    // A device saved broken is broken here too: the VM stops with the reason.
    if (broken_ && callbacks_.on_broken) callbacks_.on_broken(*broken_);
}

}  // namespace forkvm::vmm
