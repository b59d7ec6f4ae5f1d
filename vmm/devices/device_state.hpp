#pragma once
// Building blocks for saving and loading a device's state in a snapshot:
// a little-endian ByteWriter, a bounds-checked ByteReader, and the error
// every device's load_state throws. A snapshot file may be corrupt or
// hostile, so the reader checks every read against what is left, every
// length against a caller-given cap (before anything is allocated), and
// that nothing is left over at the end.

#include <cstddef>
#include <cstdint>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace forkvm::vmm {

// "<device> state: <problem>", e.g.
// "uart1 state: input FIFO length 70000 exceeds capacity 65536".
class DeviceStateError : public std::runtime_error {
public:
    DeviceStateError(std::string_view device, std::string_view problem);

    [[nodiscard]] const std::string& device() const noexcept { return device_; }
    [[nodiscard]] const std::string& problem() const noexcept { return problem_; }

private:
    std::string device_;
    std::string problem_;
};

class ByteWriter {
public:
    void u8(std::uint8_t v) { out_.push_back(v); }
    void u16(std::uint16_t v);
    void u32(std::uint32_t v);
    void u64(std::uint64_t v);
    void bytes(std::span<const std::uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
    // A u32 length followed by the bytes of any byte range (e.g. a deque).
    // Throws std::length_error if the range cannot be described by a u32.
    template <typename Range>
    void length_prefixed(const Range& r) {
        if (r.size() > UINT32_MAX) throw std::length_error("ByteWriter: range longer than 4 GiB");
        u32(static_cast<std::uint32_t>(r.size()));
        out_.insert(out_.end(), r.begin(), r.end());
    }

    [[nodiscard]] std::size_t size() const noexcept { return out_.size(); }
    [[nodiscard]] std::vector<std::uint8_t> take() && { return std::move(out_); }

private:
    std::vector<std::uint8_t> out_;
};

// Every read names what it reads (`what`), so an error says which field was
// cut short or out of range. All failures throw DeviceStateError.
class ByteReader {
public:
    ByteReader(std::span<const std::uint8_t> data, std::string_view device) : data_(data), device_(device) {}

    std::uint8_t u8(std::string_view what);
    std::uint16_t u16(std::string_view what);
    std::uint32_t u32(std::string_view what);
    std::uint64_t u64(std::string_view what);
    // The next n bytes (a view into the input; valid as long as it is).
    std::span<const std::uint8_t> bytes(std::size_t n, std::string_view what);
    // A u32 length, checked against `max` (and against the bytes left)
    // before the caller allocates anything, then that many bytes.
    std::span<const std::uint8_t> length_prefixed(std::size_t max, std::string_view what);
    // A u8 that must be 0 or 1.
    bool boolean(std::string_view what);

    // Reads the leading version byte and rejects anything but `expected`.
    void expect_version(std::uint8_t expected);
    // Rejects trailing bytes.
    void expect_end() const;

    [[nodiscard]] std::size_t remaining() const noexcept { return data_.size() - pos_; }
    // Throws DeviceStateError for this device (for callers' own checks).
    [[noreturn]] void fail(std::string_view problem) const;

private:
    void need(std::size_t n, std::string_view what) const;

    std::span<const std::uint8_t> data_;
    std::size_t pos_ = 0;
    std::string device_;
};

}  // namespace forkvm::vmm
