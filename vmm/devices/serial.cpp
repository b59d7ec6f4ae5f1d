#include "vmm/devices/serial.hpp"

#include <fmt/format.h>

#include "vmm/devices/device_state.hpp"

namespace forkvm::vmm {
namespace {

// Register offsets (DLAB = 0 unless noted) and bits, as in the 16550A data
// sheet and Linux's include/uapi/linux/serial_reg.h.
constexpr std::uint64_t kRbrThrDll = 0, kIerDlm = 1, kIirFcr = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6,
                        kScr = 7;
constexpr std::uint8_t kIerRdi = 0x01, kIerThri = 0x02;
constexpr std::uint8_t kIirNoInt = 0x01, kIirThri = 0x02, kIirRdi = 0x04, kIirFifoBits = 0xc0;
constexpr std::uint8_t kFcrEnable = 0x01;
constexpr std::uint8_t kLcrDlab = 0x80;
constexpr std::uint8_t kMcrLoop = 0x10;
constexpr std::uint8_t kLsrDr = 0x01, kLsrThre = 0x20, kLsrTemt = 0x40;
constexpr std::uint8_t kMsrCts = 0x10, kMsrDsr = 0x20, kMsrRi = 0x40, kMsrDcd = 0x80;

// The IRQ line level the registers call for.
bool irq_condition(std::uint8_t ier, bool input_pending, bool thri_pending) {
    return ((ier & kIerRdi) && input_pending) || ((ier & kIerThri) && thri_pending);
}

}  // namespace

Serial::Serial(std::function<void(bool)> set_irq, std::function<void()> notify_host)
    : set_irq_(std::move(set_irq)), notify_host_(std::move(notify_host)) {}

void Serial::read(std::uint64_t offset, std::span<std::uint8_t> data) {
    if (data.empty()) return;
    std::lock_guard lock(mu_);
    ++guest_accesses_;
    data[0] = read_reg(offset);
    for (std::size_t i = 1; i < data.size(); ++i) data[i] = 0;
    update_irq();
}

void Serial::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
    if (data.empty()) return;
    bool notify = false;
    {
        std::lock_guard lock(mu_);
        ++guest_accesses_;
        bool output_was_empty = output_.empty();
        bool input_was_full = input_.size() >= kInputCapacity / 2;
        write_reg(offset, data[0]);
        update_irq();
        notify =
            (output_was_empty && !output_.empty()) || (input_was_full && input_.size() < kInputCapacity / 2);
    }
    if (notify && notify_host_) notify_host_();
}

std::uint8_t Serial::modem_status() const {
    if (mcr_ & kMcrLoop) {
        // Loopback: the modem outputs drive the inputs (the 8250 driver's
        // probe checks this).
        std::uint8_t m = 0;
        if (mcr_ & 0x01) m |= kMsrDsr;
        if (mcr_ & 0x02) m |= kMsrCts;
        if (mcr_ & 0x04) m |= kMsrRi;
        if (mcr_ & 0x08) m |= kMsrDcd;
        return m;
    }
    return kMsrDcd | kMsrDsr | kMsrCts;
}

std::uint8_t Serial::read_reg(std::uint64_t offset) {
    const bool dlab = (lcr_ & kLcrDlab) != 0;
    switch (offset) {
        case kRbrThrDll: {
            if (dlab) return dll_;
            if (input_.empty()) return 0;
            std::uint8_t b = input_.front();
            bool was_half_full = input_.size() >= kInputCapacity / 2;
            input_.pop_front();
            if (was_half_full && input_.size() < kInputCapacity / 2 && notify_host_) {
                // Room again: the host may push more. (Called under the lock;
                // the notifier only writes an eventfd.)
                notify_host_();
            }
            return b;
        }
        case kIerDlm: return dlab ? dlm_ : ier_;
        case kIirFcr: {
            std::uint8_t fifo = (fcr_ & kFcrEnable) ? kIirFifoBits : 0;
            if ((ier_ & kIerRdi) && !input_.empty()) return fifo | kIirRdi;
            if ((ier_ & kIerThri) && thri_pending_) {
                thri_pending_ = false;  // reading IIR acknowledges THRE
                return fifo | kIirThri;
            }
            return fifo | kIirNoInt;
        }
        case kLcr: return lcr_;
        case kMcr: return mcr_;
        case kLsr: {
            std::uint8_t lsr = 0;
            if (!input_.empty()) lsr |= kLsrDr;
            if (tx_has_room()) lsr |= kLsrThre | kLsrTemt;
            return lsr;
        }
        case kMsr: return modem_status();
        case kScr: return scr_;
        default: return 0xff;
    }
}

void Serial::write_reg(std::uint64_t offset, std::uint8_t value) {
    const bool dlab = (lcr_ & kLcrDlab) != 0;
    switch (offset) {
        case kRbrThrDll:
            if (dlab) {
                dll_ = value;
            } else if (mcr_ & kMcrLoop) {
                if (input_.size() < kInputCapacity) input_.push_back(value);
            } else if (output_.size() < kOutputCapacity) {
                output_.push_back(value);
                thri_pending_ = tx_has_room();
            } else {
                ++dropped_output_;
            }
            break;
        case kIerDlm:
            if (dlab) {
                dlm_ = value;
            } else {
                bool thri_enabled = (value & kIerThri) && !(ier_ & kIerThri);
                ier_ = value & 0x0f;
                if (thri_enabled && tx_has_room()) thri_pending_ = true;
            }
            break;
        case kIirFcr:
            // FIFO enable is kept; "clear FIFO" bits are ignored on purpose:
            // bytes the host queued are never thrown away unread.
            fcr_ = value & kFcrEnable;
            break;
        case kLcr: lcr_ = value; break;
        case kMcr: mcr_ = value & 0x1f; break;
        case kScr: scr_ = value; break;
        default: break;  // LSR and MSR are read-only
    }
}

void Serial::update_irq() {
    bool level = irq_condition(ier_, !input_.empty(), thri_pending_);
    if (level != irq_level_) {
        irq_level_ = level;
        if (set_irq_) set_irq_(level);
    }
}

std::size_t Serial::push_input(std::span<const std::uint8_t> bytes) {
    std::lock_guard lock(mu_);
    std::size_t n = std::min(bytes.size(), kInputCapacity - input_.size());
    input_.insert(input_.end(), bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    update_irq();
    return n;
}

std::size_t Serial::input_room() const {
    std::lock_guard lock(mu_);
    return kInputCapacity - input_.size();
}

std::size_t Serial::input_pending() const {
    std::lock_guard lock(mu_);
    return input_.size();
}

std::size_t Serial::pop_output(std::span<std::uint8_t> out) {
    std::lock_guard lock(mu_);
    bool had_room = tx_has_room();
    std::size_t n = std::min(out.size(), output_.size());
    std::copy_n(output_.begin(), n, out.begin());
    output_.erase(output_.begin(), output_.begin() + static_cast<std::ptrdiff_t>(n));
    if (!had_room && tx_has_room()) {
        thri_pending_ = true;  // the transmitter is free again: tell the guest
        update_irq();
    }
    return n;
}

std::size_t Serial::output_pending() const {
    std::lock_guard lock(mu_);
    return output_.size();
}

std::uint64_t Serial::dropped_output() const {
    std::lock_guard lock(mu_);
    return dropped_output_;
}

// Blob layout (version 1, little-endian):
//   u8 version, u8 ier, fcr, lcr, mcr, scr, dll, dlm, u8 thri_pending (0/1),
//   u8 irq_level (0/1), u64 dropped_output, u32 input length + bytes,
//   u32 output length + bytes.
// Every register is stored exactly as kept, so the encoding is canonical:
// save_state(load_state(x)) == x for every accepted x.
std::vector<std::uint8_t> Serial::save_state() const {
    std::lock_guard lock(mu_);
    ByteWriter w;
    w.u8(kStateVersion);
    for (std::uint8_t reg : {ier_, fcr_, lcr_, mcr_, scr_, dll_, dlm_}) w.u8(reg);
    w.u8(thri_pending_ ? 1 : 0);
    w.u8(irq_level_ ? 1 : 0);
    w.u64(dropped_output_);
    w.length_prefixed(input_);
    w.length_prefixed(output_);
    return std::move(w).take();
}

void Serial::load_state(std::span<const std::uint8_t> blob) {
    ByteReader r(blob, "serial");
    r.expect_version(kStateVersion);
    // Parse and check everything into locals first, so a bad blob leaves the
    // device untouched.
    const auto masked_reg = [&r](std::string_view name, std::uint8_t allowed) {
        const std::uint8_t v = r.u8(name);
        if ((v & ~allowed) != 0)
            r.fail(fmt::format("{} 0x{:02x} has bits outside 0x{:02x}", name, v, allowed));
        return v;
    };
    const std::uint8_t ier = masked_reg("ier", 0x0f);
    const std::uint8_t fcr = masked_reg("fcr", kFcrEnable);
    const std::uint8_t lcr = r.u8("lcr");
    const std::uint8_t mcr = masked_reg("mcr", 0x1f);
    const std::uint8_t scr = r.u8("scr");
    const std::uint8_t dll = r.u8("dll");
    const std::uint8_t dlm = r.u8("dlm");
    const bool thri_pending = r.boolean("thri pending");
    const bool irq_level = r.boolean("irq level");
    const std::uint64_t dropped = r.u64("dropped output");
    const auto input = r.length_prefixed(kInputCapacity, "input FIFO");
    const auto output = r.length_prefixed(kOutputCapacity, "output buffer");
    r.expect_end();
    // The device re-derives its line after every access, so a saved level
    // that disagrees with the saved registers means the blob is corrupt.
    if (irq_condition(ier, !input.empty(), thri_pending) != irq_level) {
        r.fail(fmt::format("irq level {} disagrees with ier 0x{:02x}, {} input bytes, thri pending {}",
                           irq_level ? 1 : 0, ier, input.size(), thri_pending ? 1 : 0));
    }

    {
        std::lock_guard lock(mu_);
        ier_ = ier;
        fcr_ = fcr;
        lcr_ = lcr;
        mcr_ = mcr;
        scr_ = scr;
        dll_ = dll;
        dlm_ = dlm;
        thri_pending_ = thri_pending;
        irq_level_ = irq_level;
        dropped_output_ = dropped;
        input_.assign(input.begin(), input.end());
        output_.assign(output.begin(), output.end());
        // Always drive the line, even if unchanged from before the load: the
        // interrupt controller is restored separately and must agree with us.
        if (set_irq_) set_irq_(irq_level_);
    }
    // Host wake-ups are edge-triggered on buffer changes; the buffers just
    // changed wholesale, so let the host look at both again.
    if (notify_host_) notify_host_();
}

bool Serial::retrigger_stalled_irq() {
    std::lock_guard lock(mu_);
    const bool stalled = irq_level_ && guest_accesses_ == accesses_at_last_check_;
    accesses_at_last_check_ = guest_accesses_;
    if (!stalled || !set_irq_) return false;
    set_irq_(false);
    set_irq_(true);
    ++irq_retriggers_;
    return true;
}

std::uint64_t Serial::irq_retriggers() const {
    std::lock_guard lock(mu_);
    return irq_retriggers_;
}

std::string Serial::describe() const {
    std::lock_guard lock(mu_);
    return fmt::format("uart: input {} output {} ier {:#x} irq {} thri {} retriggers {}", input_.size(),
                       output_.size(), ier_, irq_level_ ? "high" : "low", thri_pending_, irq_retriggers_);
}

}  // namespace forkvm::vmm
