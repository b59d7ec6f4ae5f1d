#include "vmm/devices/cmos_rtc.hpp"

#include <ctime>
#include <fmt/format.h>

#include "vmm/devices/device_state.hpp"

namespace forkvm::vmm {
namespace {

constexpr std::uint8_t kIndexMask = 0x7f;  // bit 7 of the index port is the NMI mask

std::uint8_t bcd(int v) { return static_cast<std::uint8_t>(((v / 10) << 4) | (v % 10)); }

}  // namespace

std::uint8_t CmosRtc::register_at(std::uint8_t index, std::int64_t unix_seconds) {
    std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    switch (index) {
        case 0x00: return bcd(tm.tm_sec);
        case 0x02: return bcd(tm.tm_min);
        case 0x04: return bcd(tm.tm_hour);
        case 0x06: return bcd(tm.tm_wday + 1);
        case 0x07: return bcd(tm.tm_mday);
        case 0x08: return bcd(tm.tm_mon + 1);
        case 0x09: return bcd(tm.tm_year % 100);
        case 0x32: return bcd(19 + tm.tm_year / 100);  // century
        case 0x0a: return 0x26;                        // status A: 32.768 kHz base, never update-in-progress
        case 0x0b: return 0x02;                        // status B: 24-hour mode, BCD, no interrupts
        case 0x0c: return 0x00;                        // status C: no interrupt flags
        case 0x0d: return 0x80;                        // status D: battery good, RAM valid
        default: return 0x00;                          // other CMOS RAM: empty
    }
}

void CmosRtc::read(std::uint64_t offset, std::span<std::uint8_t> data) {
    if (data.empty()) return;
    std::lock_guard lock(mu_);
    if (offset == 1) {
        data[0] = register_at(index_, static_cast<std::int64_t>(std::time(nullptr)));
    } else {
        data[0] = index_;
    }
    for (std::size_t i = 1; i < data.size(); ++i) data[i] = 0;
}

void CmosRtc::write(std::uint64_t offset, std::span<const std::uint8_t> data) {
    if (data.empty() || offset != 0) return;
    std::lock_guard lock(mu_);
    index_ = data[0] & kIndexMask;
}

// Blob layout (version 1): u8 version, u8 index (0..0x7f).
std::vector<std::uint8_t> CmosRtc::save_state() const {
    std::lock_guard lock(mu_);
    ByteWriter w;
    w.u8(kStateVersion);
    w.u8(index_);
    return std::move(w).take();
}

void CmosRtc::load_state(std::span<const std::uint8_t> blob) {
    ByteReader r(blob, "cmos_rtc");
    r.expect_version(kStateVersion);
    const std::uint8_t index = r.u8("index");
    if ((index & ~kIndexMask) != 0) r.fail(fmt::format("index 0x{:02x} is above 0x7f", index));
    r.expect_end();
    std::lock_guard lock(mu_);
    index_ = index;
}

}  // namespace forkvm::vmm
