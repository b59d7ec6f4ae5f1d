#include "vmm/devices/i8042.hpp"

#include <fmt/format.h>

#include "vmm/devices/device_state.hpp"

namespace forkvm::vmm {
namespace {

constexpr std::uint8_t kStatusOutputFull = 0x01;
constexpr std::uint8_t kStatusSystem = 0x04;   // self test passed
constexpr std::uint8_t kStatusCommand = 0x08;  // last write was a command

constexpr std::uint8_t kCmdReadControl = 0x20;
constexpr std::uint8_t kCmdWriteControl = 0x60;
constexpr std::uint8_t kCmdSelfTest = 0xaa;
constexpr std::uint8_t kCmdInterfaceTest = 0xab;
constexpr std::uint8_t kCmdWriteOutputPort = 0xd1;
constexpr std::uint8_t kCmdReset = 0xfe;

}  // namespace

void I8042::read(std::uint64_t offset, std::span<std::uint8_t> data) {
    if (data.empty()) return;
    std::lock_guard lock(mu_);
    std::uint8_t v = 0;
    if (offset == kDataPort - kDataPort) {
        if (!out_.empty()) {
            v = out_.front();
            out_.pop_front();
        }
    } else if (offset == kCommandPort - kDataPort) {
        v = kStatusSystem | kStatusCommand;
        if (!out_.empty()) v |= kStatusOutputFull;
    } else {
        v = 0xff;
    }
    data[0] = v;
    for (std::size_t i = 1; i < data.size(); ++i) data[i] = 0;
}

void I8042::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
    if (data.empty()) return;
    bool reset = false;
    {
        std::lock_guard lock(mu_);
        const std::uint8_t v = data[0];
        if (offset == kCommandPort - kDataPort) {
            switch (v) {
                case kCmdReadControl: out_.push_back(control_); break;
                case kCmdWriteControl:
                case kCmdWriteOutputPort: pending_command_ = v; break;
                case kCmdSelfTest: out_.push_back(0x55); break;
                case kCmdInterfaceTest: out_.push_back(0x00); break;
                case kCmdReset:
                    reset = !reset_;
                    reset_ = true;
                    break;
                default: break;  // other commands have no effect here
            }
        } else if (offset == 0) {
            if (pending_command_ == kCmdWriteControl) control_ = v;
            // Output port bit 0 low = CPU reset (another way to reboot).
            if (pending_command_ == kCmdWriteOutputPort && (v & 0x01) == 0) {
                reset = !reset_;
                reset_ = true;
            }
            pending_command_ = 0;
        }
        if (out_.size() > kOutputLimit) out_.pop_front();  // a guest spamming commands stays bounded
    }
    if (reset && on_reset_) on_reset_();
}

bool I8042::reset_requested() const {
    std::lock_guard lock(mu_);
    return reset_;
}

// Blob layout (version 1): u8 version, u8 control, u8 pending command (0 or
// a command that takes a data byte), u8 reset (0/1), u32 length + the bytes
// waiting at 0x60.
std::vector<std::uint8_t> I8042::save_state() const {
    std::lock_guard lock(mu_);
    ByteWriter w;
    w.u8(kStateVersion);
    w.u8(control_);
    w.u8(pending_command_);
    w.u8(reset_ ? 1 : 0);
    w.length_prefixed(out_);
    return std::move(w).take();
}

void I8042::load_state(std::span<const std::uint8_t> blob) {
    ByteReader r(blob, "i8042");
    r.expect_version(kStateVersion);
    const std::uint8_t control = r.u8("control");
    const std::uint8_t pending = r.u8("pending command");
    if (pending != 0 && pending != kCmdWriteControl && pending != kCmdWriteOutputPort) {
        r.fail(fmt::format("pending command 0x{:02x} takes no data byte", pending));
    }
    const bool reset = r.boolean("reset");
    const auto out = r.length_prefixed(kOutputLimit, "output queue");
    r.expect_end();

    std::lock_guard lock(mu_);
    control_ = control;
    pending_command_ = pending;
    reset_ = reset;
    out_.assign(out.begin(), out.end());
}

}  // namespace forkvm::vmm
