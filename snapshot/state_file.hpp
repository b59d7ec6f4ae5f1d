#pragma once
// StateFile: the state.bin container. An ordered list of named sections
// (short ASCII tag + opaque bytes) serialised in a versioned, checksummed,
// little-endian format (docs/snapshot-format.md has the byte layout).
// The VM code puts KVM and device state blobs in; nothing here knows KVM.

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace forkvm::snapshot {

// Format version of state.bin; independent of the product version. Bump it
// on any layout change; readers accept exactly the versions they know.
inline constexpr std::uint32_t kFormatVersion = 1;
inline constexpr std::size_t kDefaultMaxStateFileSize = std::size_t{64} << 20;
inline constexpr std::size_t kMaxSections = 4096;
inline constexpr std::size_t kMaxTagLength = 64;
inline constexpr std::size_t kHeaderSize = 40;
inline constexpr std::size_t kSectionHeaderSize = 8;
inline constexpr std::size_t kTrailerSize = 32;  // SHA-256 of everything before it
inline constexpr std::size_t kAlignment = 8;

struct ParseOptions {
    // Files (or byte buffers) larger than this are refused before reading.
    std::size_t max_size = kDefaultMaxStateFileSize;
    // Fuzzing only: skip the SHA-256 comparison so mutated inputs reach the
    // structure parser. Every product caller leaves this true.
    bool verify_checksum = true;
};

// A tag is 1..kMaxTagLength characters from [A-Za-z0-9._-].
[[nodiscard]] bool is_valid_tag(std::string_view tag) noexcept;

class StateFile {
public:
    struct Section {
        std::string tag;
        std::vector<std::uint8_t> data;
        friend bool operator==(const Section&, const Section&) = default;
    };

    StateFile() = default;

    // --- Writing. Misuse (bad tag, duplicate tag, more than kMaxSections,
    // a section over 4 GiB) is a programming error: std::invalid_argument.
    void add(std::string_view tag, std::span<const std::uint8_t> data);
    void add_u32(std::string_view tag, std::uint32_t value);
    void add_u64(std::string_view tag, std::uint64_t value);
    void add_string(std::string_view tag, std::string_view value);
    // Raw bytes of a trivially copyable struct (host layout: x86-64, the
    // only architecture the file's arch magic admits), e.g. struct kvm_regs.
    template <typename T>
    void add_struct(std::string_view tag, const T& value) {
        static_assert(std::is_trivially_copyable_v<T>, "add_struct needs a trivially copyable type");
        std::vector<std::uint8_t> bytes(sizeof(T));
        std::memcpy(bytes.data(), &value, sizeof(T));
        add(tag, bytes);
    }

    // --- Reading. A missing tag throws SnapshotError(missing_section) naming
    // the file and the tag; a section of the wrong size for a typed getter
    // throws SnapshotError(corrupt).
    [[nodiscard]] bool contains(std::string_view tag) const;
    [[nodiscard]] std::span<const std::uint8_t> section(std::string_view tag) const;
    [[nodiscard]] std::uint32_t get_u32(std::string_view tag) const;
    [[nodiscard]] std::uint64_t get_u64(std::string_view tag) const;
    [[nodiscard]] std::string get_string(std::string_view tag) const;
    template <typename T>
    [[nodiscard]] T get_struct(std::string_view tag) const {
        static_assert(std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T>,
                      "get_struct needs a trivially copyable, default-constructible type");
        auto bytes = sized_section(tag, sizeof(T));
        T value{};
        std::memcpy(&value, bytes.data(), sizeof(T));
        return value;
    }

    [[nodiscard]] const std::vector<Section>& sections() const noexcept { return sections_; }
    [[nodiscard]] std::size_t size() const noexcept { return sections_.size(); }
    // The file name used in error messages ("<memory>" when built in memory).
    [[nodiscard]] const std::string& source() const noexcept { return source_; }

    // --- Serialisation.
    [[nodiscard]] std::vector<std::uint8_t> serialize() const;
    // serialize() + write_file_atomic(): never leaves a half-written file.
    void write(const std::string& path) const;

    // Throws SnapshotError (truncated, corrupt, wrong_magic, wrong_arch,
    // unsupported_version, too_large); source names the input in messages.
    [[nodiscard]] static StateFile parse(std::span<const std::uint8_t> bytes,
                                         const std::string& source = "<memory>",
                                         const ParseOptions& options = {});
    // Refuses a file over options.max_size before reading it; adds not_found
    // and io to the kinds above.
    [[nodiscard]] static StateFile read(const std::string& path, const ParseOptions& options = {});

private:
    std::span<const std::uint8_t> sized_section(std::string_view tag, std::size_t expected) const;

    std::vector<Section> sections_;
    std::map<std::string, std::size_t, std::less<>> index_;  // tag -> position in sections_
    std::string source_ = "<memory>";
};

}  // namespace forkvm::snapshot
