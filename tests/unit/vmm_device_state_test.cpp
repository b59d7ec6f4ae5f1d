// Snapshot state of the emulated devices: save_state/load_state round trips
// observed through the guest's register interface, and rejection of
// truncated, hostile or mismatched blobs with DeviceStateError.

#include <cstdint>
#include <doctest/doctest.h>
#include <span>
#include <string>
#include <vector>

#include "vmm/devices/cmos_rtc.hpp"
#include "vmm/devices/device_state.hpp"
#include "vmm/devices/i8042.hpp"
#include "vmm/devices/serial.hpp"

using forkvm::vmm::ByteReader;
using forkvm::vmm::ByteWriter;
using forkvm::vmm::CmosRtc;
using forkvm::vmm::DeviceStateError;
using forkvm::vmm::I8042;
using forkvm::vmm::Serial;

namespace {

// UART register offsets.
constexpr std::uint64_t kRbr = 0, kIer = 1, kIir = 2, kLcr = 3, kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7;

std::uint8_t reg_read(forkvm::vmm::BusDevice& d, std::uint64_t offset) {
    std::uint8_t b = 0xee;
    d.read(offset, std::span<std::uint8_t>(&b, 1));
    return b;
}

void reg_write(forkvm::vmm::BusDevice& d, std::uint64_t offset, std::uint8_t v) {
    d.write(offset, std::span<const std::uint8_t>(&v, 1));
}

std::vector<std::uint8_t> bytes_of(std::string_view s) { return {s.begin(), s.end()}; }

// A Serial that records every IRQ level it drives and every host wake-up.
struct RecordingSerial {
    std::vector<bool> irq_calls;
    int notifications = 0;
    Serial serial{[this](bool level) { irq_calls.push_back(level); }, [this] { ++notifications; }};
};

// A UART with registers set the way the Linux 8250 driver sets them, output
// the host has not taken and input the guest has not read.
void program_uart(Serial& s) {
    reg_write(s, kLcr, 0x80);  // DLAB on
    reg_write(s, kRbr, 0x01);  // DLL: 115200 baud
    reg_write(s, kIer, 0x00);  // DLM
    reg_write(s, kLcr, 0x03);  // 8N1, DLAB off
    reg_write(s, kIir, 0x07);  // FCR: enable + clear FIFOs
    reg_write(s, kMcr, 0x0b);  // DTR, RTS, OUT2
    reg_write(s, kScr, 0x5a);
    for (std::uint8_t b : bytes_of("hello")) reg_write(s, kRbr, b);
    reg_write(s, kIer, 0x01);  // receive interrupts only
    REQUIRE(s.push_input(bytes_of("world!")) == 6);
}

// Everything a guest and the host can observe, read in a fixed order (the
// reads have the same side effects on both devices compared).
std::vector<std::uint8_t> observe_uart(Serial& s) {
    std::vector<std::uint8_t> seen;
    for (std::uint64_t r : {kIer, kIir, kLcr, kMcr, kLsr, kMsr, kScr}) seen.push_back(reg_read(s, r));
    const std::uint8_t lcr = reg_read(s, kLcr);
    reg_write(s, kLcr, static_cast<std::uint8_t>(lcr | 0x80));
    seen.push_back(reg_read(s, kRbr));  // DLL
    seen.push_back(reg_read(s, kIer));  // DLM
    reg_write(s, kLcr, lcr);
    while (reg_read(s, kLsr) & 0x01) seen.push_back(reg_read(s, kRbr));
    seen.push_back(0xff);  // separator between input and output
    std::vector<std::uint8_t> out(s.output_pending());
    out.resize(s.pop_output(out));
    seen.insert(seen.end(), out.begin(), out.end());
    seen.push_back(reg_read(s, kIir));
    return seen;
}

std::string error_of(auto&& fn) {
    try {
        fn();
    } catch (const DeviceStateError& e) {
        return e.what();
    }
    return "<no error>";
}

// A hand-built serial blob: version 1, given registers and buffers.
std::vector<std::uint8_t> serial_blob(std::uint8_t ier, std::uint32_t input_len, std::uint32_t output_len,
                                      std::uint8_t irq_level) {
    ByteWriter w;
    w.u8(1);
    for (std::uint8_t reg : {ier, std::uint8_t{1}, std::uint8_t{3}, std::uint8_t{0x0b}, std::uint8_t{0},
                             std::uint8_t{1}, std::uint8_t{0}}) {
        w.u8(reg);
    }
    w.u8(0);  // thri pending
    w.u8(irq_level);
    w.u64(0);
    w.u32(input_len);
    for (std::uint32_t i = 0; i < input_len; ++i) w.u8(static_cast<std::uint8_t>('a' + i % 26));
    w.u32(output_len);
    for (std::uint32_t i = 0; i < output_len; ++i) w.u8(static_cast<std::uint8_t>('A' + i % 26));
    return std::move(w).take();
}

}  // namespace

TEST_CASE("vmm: ByteWriter and ByteReader round trip little-endian integers") {
    ByteWriter w;
    w.u8(0x12);
    w.u16(0x3456);
    w.u32(0x789abcde);
    w.u64(0x0102030405060708);
    w.length_prefixed(bytes_of("xyz"));
    const auto blob = std::move(w).take();
    REQUIRE(blob.size() == 1 + 2 + 4 + 8 + 4 + 3);
    CHECK(blob[1] == 0x56);  // low byte first
    CHECK(blob[2] == 0x34);

    ByteReader r(blob, "dev");
    CHECK(r.u8("a") == 0x12);
    CHECK(r.u16("b") == 0x3456);
    CHECK(r.u32("c") == 0x789abcde);
    CHECK(r.u64("d") == 0x0102030405060708);
    auto s = r.length_prefixed(3, "e");
    CHECK(std::string(s.begin(), s.end()) == "xyz");
    CHECK_NOTHROW(r.expect_end());
    CHECK(error_of([&] { r.u8("f"); }) == "dev state: truncated: f needs 1 bytes, 0 left");
}

TEST_CASE("vmm: ByteReader checks a length against its cap before the bytes") {
    ByteWriter w;
    w.u32(70000);
    const auto blob = std::move(w).take();
    ByteReader r(blob, "uart1");
    try {
        (void)r.length_prefixed(65536, "input FIFO");
        FAIL("accepted an oversized length");
    } catch (const DeviceStateError& e) {
        CHECK(std::string(e.what()) == "uart1 state: input FIFO length 70000 exceeds capacity 65536");
        CHECK(e.device() == "uart1");
        CHECK(e.problem() == "input FIFO length 70000 exceeds capacity 65536");
    }
}

TEST_CASE("vmm: serial state round trip keeps registers and queued bytes both ways") {
    RecordingSerial a;
    program_uart(a.serial);
    REQUIRE(a.serial.output_pending() == 5);
    REQUIRE(a.serial.input_pending() == 6);
    const auto blob = a.serial.save_state();

    RecordingSerial b;
    b.serial.load_state(blob);
    CHECK(b.serial.save_state() == blob);
    CHECK(b.serial.output_pending() == 5);
    CHECK(b.serial.input_pending() == 6);
    CHECK(b.notifications == 1);

    const auto seen_a = observe_uart(a.serial);
    const auto seen_b = observe_uart(b.serial);
    CHECK(seen_b == seen_a);
    // And the values are the ones the guest set, not merely equal.
    const std::vector<std::uint8_t> expected_head = {
        0x01,  // IER
        0xc4,  // IIR: FIFOs on, receive data available
        0x03,  // LCR
        0x0b,  // MCR
        0x61,  // LSR: data ready, THR empty, transmitter empty
        0xb0,  // MSR: DCD, DSR, CTS
        0x5a,  // SCR
        0x01,  // DLL
        0x00,  // DLM
    };
    REQUIRE(seen_b.size() >= expected_head.size());
    CHECK(std::vector<std::uint8_t>(seen_b.begin(), seen_b.begin() + 9) == expected_head);
    const std::string tail(seen_b.begin() + 9, seen_b.end());
    CHECK(tail ==
          "world!\xff"
          "hello\xc1");
}

TEST_CASE("vmm: serial load_state drives the IRQ line with the loaded level") {
    RecordingSerial a;
    program_uart(a.serial);  // receive interrupt enabled, input pending: line high
    REQUIRE(!a.irq_calls.empty());
    REQUIRE(a.irq_calls.back() == true);

    RecordingSerial b;
    b.serial.load_state(a.serial.save_state());
    REQUIRE(b.irq_calls.size() == 1);
    CHECK(b.irq_calls[0] == true);

    // Loading a quiet state drives the line low, even though the device
    // thinks it was already low: the restored PIC must hear it.
    RecordingSerial quiet;
    RecordingSerial c;
    c.serial.load_state(quiet.serial.save_state());
    REQUIRE(c.irq_calls.size() == 1);
    CHECK(c.irq_calls[0] == false);
    // And over a device whose line was high.
    b.serial.load_state(quiet.serial.save_state());
    REQUIRE(b.irq_calls.size() == 2);
    CHECK(b.irq_calls[1] == false);
    CHECK(b.serial.input_pending() == 0);
    CHECK(b.serial.output_pending() == 0);
}

TEST_CASE("vmm: serial state keeps a pending THRE interrupt") {
    RecordingSerial a;
    reg_write(a.serial, kIer, 0x02);  // enabling THRI with room raises it at once
    REQUIRE(a.irq_calls == std::vector<bool>{true});

    RecordingSerial b;
    b.serial.load_state(a.serial.save_state());
    CHECK(b.irq_calls == std::vector<bool>{true});
    CHECK(reg_read(b.serial, kIir) == 0x02);  // THRE, acknowledged by this read
    CHECK(reg_read(b.serial, kIir) == 0x01);
    CHECK(b.irq_calls == std::vector<bool>{true, false});
}

TEST_CASE("vmm: serial state with a full output buffer loses nothing") {
    RecordingSerial a;
    for (std::size_t i = 0; i < Serial::kOutputCapacity + 3; ++i) {
        reg_write(a.serial, kRbr, static_cast<std::uint8_t>(i));
    }
    REQUIRE(a.serial.dropped_output() == 3);
    REQUIRE((reg_read(a.serial, kLsr) & 0x20) == 0);  // transmitter busy

    RecordingSerial b;
    b.serial.load_state(a.serial.save_state());
    CHECK(b.serial.dropped_output() == 3);
    CHECK((reg_read(b.serial, kLsr) & 0x20) == 0);
    std::vector<std::uint8_t> out(Serial::kOutputCapacity + 10);
    REQUIRE(b.serial.pop_output(out) == Serial::kOutputCapacity);
    bool all_in_order = true;
    for (std::size_t i = 0; i < Serial::kOutputCapacity; ++i) {
        all_in_order = all_in_order && out[i] == static_cast<std::uint8_t>(i);
    }
    CHECK(all_in_order);
    CHECK((reg_read(b.serial, kLsr) & 0x20) != 0);
}

TEST_CASE("vmm: serial load_state rejects every truncation of a valid blob") {
    RecordingSerial a;
    program_uart(a.serial);
    const auto blob = a.serial.save_state();
    for (std::size_t len = 0; len < blob.size(); ++len) {
        RecordingSerial b;
        const std::string err =
            error_of([&] { b.serial.load_state(std::span<const std::uint8_t>(blob.data(), len)); });
        CHECK_MESSAGE(err.find("serial state: truncated") == 0, "length ", len, ": ", err);
        CHECK(b.irq_calls.empty());
        CHECK(b.notifications == 0);
    }
}

TEST_CASE("vmm: serial load_state rejects a wrong version, trailing bytes and bad values") {
    RecordingSerial a;
    program_uart(a.serial);
    const auto good = a.serial.save_state();
    Serial s(nullptr, nullptr);

    auto v2 = good;
    v2[0] = 2;
    CHECK(error_of([&] { s.load_state(v2); }) ==
          "serial state: unsupported version 2 (this build reads version 1)");
    auto v0 = good;
    v0[0] = 0;
    CHECK(error_of([&] { s.load_state(v0); }).find("unsupported version 0") != std::string::npos);

    auto trailing = good;
    trailing.push_back(0);
    CHECK(error_of([&] { s.load_state(trailing); }) == "serial state: 1 trailing bytes");

    auto bad_ier = good;
    bad_ier[1] = 0x10;
    CHECK(error_of([&] { s.load_state(bad_ier); }) == "serial state: ier 0x10 has bits outside 0x0f");
    auto bad_fcr = good;
    bad_fcr[2] = 0x07;  // the clear bits are never kept
    CHECK(error_of([&] { s.load_state(bad_fcr); }).find("fcr 0x07") != std::string::npos);
    auto bad_mcr = good;
    bad_mcr[4] = 0x20;
    CHECK(error_of([&] { s.load_state(bad_mcr); }).find("mcr 0x20") != std::string::npos);
    auto bad_bool = good;
    bad_bool[8] = 2;
    CHECK(error_of([&] { s.load_state(bad_bool); }) == "serial state: thri pending is 2, not 0 or 1");
    auto wrong_level = good;
    wrong_level[9] = 0;  // receive interrupt enabled with input queued, yet "low"
    CHECK(error_of([&] { s.load_state(wrong_level); }).find("irq level 0 disagrees") != std::string::npos);

    // None of the failures changed the device.
    Serial fresh(nullptr, nullptr);
    CHECK(s.save_state() == fresh.save_state());
}

TEST_CASE("vmm: serial load_state rejects buffer lengths above capacity") {
    Serial s(nullptr, nullptr);
    // The length alone, without the bytes: the cap must be checked first.
    auto huge_input = serial_blob(0, 0, 0, 0);
    huge_input.resize(1 + 7 + 2 + 8);
    ByteWriter len;
    len.u32(70000);
    const auto len_bytes = std::move(len).take();
    huge_input.insert(huge_input.end(), len_bytes.begin(), len_bytes.end());
    CHECK(error_of([&] { s.load_state(huge_input); }) ==
          "serial state: input FIFO length 70000 exceeds capacity 65536");

    auto over_by_one = serial_blob(0, Serial::kInputCapacity + 1, 0, 0);
    CHECK(error_of([&] { s.load_state(over_by_one); }) ==
          "serial state: input FIFO length 65537 exceeds capacity 65536");
    auto output_over = serial_blob(0, 0, Serial::kOutputCapacity + 1, 0);
    CHECK(error_of([&] { s.load_state(output_over); }) ==
          "serial state: output buffer length 65537 exceeds capacity 65536");
    auto max_len = serial_blob(0, 0, 0, 0);
    max_len.resize(max_len.size() - 8);  // drop both zero lengths
    for (int i = 0; i < 4; ++i) max_len.push_back(0xff);
    CHECK(error_of([&] { s.load_state(max_len); }).find("length 4294967295 exceeds") != std::string::npos);

    // Exactly at capacity is fine.
    auto full = serial_blob(0, Serial::kInputCapacity, Serial::kOutputCapacity, 0);
    CHECK_NOTHROW(s.load_state(full));
    CHECK(s.input_pending() == Serial::kInputCapacity);
    CHECK(s.output_pending() == Serial::kOutputCapacity);
    CHECK(s.input_room() == 0);
    CHECK(s.save_state() == full);
}

TEST_CASE("vmm: i8042 state round trip keeps queued bytes and a pending command") {
    int resets_a = 0;
    I8042 a([&] { ++resets_a; });
    reg_write(a, 4, 0x20);  // read control byte -> 0x41 queued
    reg_write(a, 4, 0xaa);  // self test -> 0x55 queued
    reg_write(a, 4, 0x60);  // write control: waits for a data byte
    const auto blob = a.save_state();

    int resets_b = 0;
    I8042 b([&] { ++resets_b; });
    b.load_state(blob);
    CHECK(b.save_state() == blob);
    CHECK((reg_read(b, 4) & 0x01) == 0x01);  // output full
    reg_write(b, 0, 0x47);                   // the pending command takes it
    CHECK(reg_read(b, 0) == 0x41);
    CHECK(reg_read(b, 0) == 0x55);
    CHECK((reg_read(b, 4) & 0x01) == 0x00);
    reg_write(b, 4, 0x20);
    CHECK(reg_read(b, 0) == 0x47);
    CHECK(resets_b == 0);
}

TEST_CASE("vmm: i8042 state keeps the reset flag without firing the callback") {
    int resets_a = 0;
    I8042 a([&] { ++resets_a; });
    reg_write(a, 4, 0xfe);
    REQUIRE(resets_a == 1);
    int resets_b = 0;
    I8042 b([&] { ++resets_b; });
    b.load_state(a.save_state());
    CHECK(b.reset_requested());
    CHECK(resets_b == 0);
    reg_write(b, 4, 0xfe);  // already reset: no second callback, as before
    CHECK(resets_b == 0);
}

TEST_CASE("vmm: i8042 load_state rejects bad blobs") {
    I8042 a(nullptr);
    reg_write(a, 4, 0xaa);
    const auto good = a.save_state();
    I8042 s(nullptr);
    for (std::size_t len = 0; len < good.size(); ++len) {
        CHECK(error_of([&] {
                  s.load_state(std::span<const std::uint8_t>(good.data(), len));
              }).find("i8042 state: truncated") == 0);
    }
    auto v2 = good;
    v2[0] = 2;
    CHECK(error_of([&] { s.load_state(v2); }).find("i8042 state: unsupported version 2") == 0);
    auto trailing = good;
    trailing.push_back(1);
    CHECK(error_of([&] { s.load_state(trailing); }) == "i8042 state: 1 trailing bytes");
    auto bad_cmd = good;
    bad_cmd[2] = 0xaa;
    CHECK(error_of([&] { s.load_state(bad_cmd); }) == "i8042 state: pending command 0xaa takes no data byte");
    auto bad_reset = good;
    bad_reset[3] = 7;
    CHECK(error_of([&] { s.load_state(bad_reset); }) == "i8042 state: reset is 7, not 0 or 1");

    ByteWriter w;
    w.u8(1);
    w.u8(0x41);
    w.u8(0);
    w.u8(0);
    w.u32(I8042::kOutputLimit + 1);
    for (std::size_t i = 0; i <= I8042::kOutputLimit; ++i) w.u8(0);
    CHECK(error_of([&] { s.load_state(std::move(w).take()); }) ==
          "i8042 state: output queue length 17 exceeds capacity 16");
    CHECK(s.save_state() == I8042(nullptr).save_state());
}

TEST_CASE("vmm: CMOS RTC state round trip keeps the selected index") {
    CmosRtc a;
    reg_write(a, 0, 0x8b);  // NMI mask bit + status B
    const auto blob = a.save_state();
    CHECK(blob == std::vector<std::uint8_t>{1, 0x0b});
    CmosRtc b;
    b.load_state(blob);
    CHECK(reg_read(b, 0) == 0x0b);
    CHECK(reg_read(b, 1) == 0x02);  // status B: 24-hour, BCD
}

TEST_CASE("vmm: CMOS RTC load_state rejects bad blobs") {
    CmosRtc s;
    reg_write(s, 0, 0x0a);
    const std::vector<std::uint8_t> empty;
    CHECK(error_of([&] { s.load_state(empty); }) ==
          "cmos_rtc state: truncated: version needs 1 bytes, 0 left");
    CHECK(error_of([&] { s.load_state(std::vector<std::uint8_t>{1}); }).find("truncated: index") !=
          std::string::npos);
    CHECK(error_of([&] {
              s.load_state(std::vector<std::uint8_t>{2, 0});
          }).find("cmos_rtc state: unsupported version 2") == 0);
    CHECK(error_of([&] {
              s.load_state(std::vector<std::uint8_t>{1, 0x80});
          }) == "cmos_rtc state: index 0x80 is above 0x7f");
    CHECK(error_of([&] {
              s.load_state(std::vector<std::uint8_t>{1, 0, 0});
          }) == "cmos_rtc state: 1 trailing bytes");
    CHECK(reg_read(s, 0) == 0x0a);  // unchanged by the failures
}
