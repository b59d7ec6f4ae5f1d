#include "snapshot/state_file.hpp"

#include <algorithm>
#include <array>
#include <limits>
#include <stdexcept>

#include "snapshot/file_io.hpp"
#include "snapshot/sha256.hpp"
#include "snapshot/snapshot_error.hpp"

namespace forkvm::snapshot {
namespace {

constexpr std::array<std::uint8_t, 8> kFileMagic = {'F', 'K', 'V', 'M', 'S', 'N', 'A', 'P'};
constexpr std::array<std::uint8_t, 8> kArchMagic = {'x', '8', '6', '_', '6', '4', 0, 0};

// Header field offsets (docs/snapshot-format.md).
constexpr std::size_t kOffMagic = 0;
constexpr std::size_t kOffArch = 8;
constexpr std::size_t kOffVersion = 16;
constexpr std::size_t kOffFlags = 20;
constexpr std::size_t kOffSectionCount = 24;
constexpr std::size_t kOffReserved = 28;
constexpr std::size_t kOffTotalLength = 32;

constexpr std::uint64_t align_up(std::uint64_t n) {
    return (n + (kAlignment - 1)) & ~std::uint64_t{kAlignment - 1};
}

// Little-endian encoding, explicit byte by byte so the format does not
// depend on the host's byte order.
void put_le(std::vector<std::uint8_t>& out, std::uint64_t value, std::size_t width) {
    for (std::size_t i = 0; i < width; ++i) out.push_back(static_cast<std::uint8_t>(value >> (8 * i)));
}
std::uint64_t get_le(std::span<const std::uint8_t> in, std::size_t offset, std::size_t width) {
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < width; ++i) value |= std::uint64_t{in[offset + i]} << (8 * i);
    return value;
}
void pad_to_alignment(std::vector<std::uint8_t>& out) {
    while (out.size() % kAlignment != 0) out.push_back(0);
}
bool all_zero(std::span<const std::uint8_t> bytes) {
    for (std::uint8_t b : bytes)
        if (b != 0) return false;
    return true;
}
bool starts_with(std::span<const std::uint8_t> bytes, std::span<const std::uint8_t> prefix) {
    std::size_t n = std::min(bytes.size(), prefix.size());
    return std::equal(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n), prefix.begin());
}

[[noreturn]] void fail(SnapshotErrorKind kind, const std::string& source, const std::string& problem) {
    throw SnapshotError(kind, source, problem);
}
[[noreturn]] void corrupt(const std::string& source, const std::string& problem) {
    fail(SnapshotErrorKind::corrupt, source, problem);
}

void check_header(std::span<const std::uint8_t> bytes, const std::string& source) {
    if (!starts_with(bytes, kFileMagic)) {
        fail(SnapshotErrorKind::wrong_magic, source, "not a forkvm state file (bad magic)");
    }
    if (bytes.size() < kHeaderSize) {
        fail(SnapshotErrorKind::truncated, source,
             "file is " + std::to_string(bytes.size()) + " bytes, shorter than the " +
                 std::to_string(kHeaderSize) + "-byte header");
    }
    if (!starts_with(bytes.subspan(kOffArch), kArchMagic)) {
        fail(SnapshotErrorKind::wrong_arch, source, "snapshot is not for x86_64");
    }
    auto version = static_cast<std::uint32_t>(get_le(bytes, kOffVersion, 4));
    if (version > kFormatVersion) {
        fail(SnapshotErrorKind::unsupported_version, source,
             "format version " + std::to_string(version) + " is newer than this build supports (" +
                 std::to_string(kFormatVersion) + ")");
    }
    if (version < kFormatVersion) {
        fail(SnapshotErrorKind::unsupported_version, source,
             "format version " + std::to_string(version) + " is older than this build supports (" +
                 std::to_string(kFormatVersion) + ")");
    }
    auto flags = static_cast<std::uint32_t>(get_le(bytes, kOffFlags, 4));
    if (flags != 0) {
        // Version 1 defines no flags: a set one means a feature we do not know.
        fail(SnapshotErrorKind::unsupported_version, source,
             "unknown header flags (" + std::to_string(flags) + ") for format version 1");
    }
    std::uint64_t total = get_le(bytes, kOffTotalLength, 8);
    if (total > bytes.size()) {
        fail(SnapshotErrorKind::truncated, source,
             "file is " + std::to_string(bytes.size()) + " bytes, header says " + std::to_string(total));
    }
    if (total < bytes.size()) {
        corrupt(source, "file is " + std::to_string(bytes.size()) + " bytes, header says " +
                            std::to_string(total) + " (trailing bytes)");
    }
    if (total < kHeaderSize + kTrailerSize)
        corrupt(source, "total length " + std::to_string(total) + " too small");
    if (get_le(bytes, kOffReserved, 4) != 0) corrupt(source, "reserved header field is not zero");
}

}  // namespace

bool is_valid_tag(std::string_view tag) noexcept {
    if (tag.empty() || tag.size() > kMaxTagLength) return false;
    for (char c : tag) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-';
        if (!ok) return false;
    }
    return true;
}

void StateFile::add(std::string_view tag, std::span<const std::uint8_t> data) {
    if (!is_valid_tag(tag))
        throw std::invalid_argument("snapshot: invalid section tag '" + std::string(tag) + "'");
    if (contains(tag))
        throw std::invalid_argument("snapshot: duplicate section tag '" + std::string(tag) + "'");
    if (sections_.size() >= kMaxSections) throw std::invalid_argument("snapshot: too many sections");
    if (data.size() > std::numeric_limits<std::uint32_t>::max()) {
        throw std::invalid_argument("snapshot: section '" + std::string(tag) + "' is larger than 4 GiB");
    }
    index_.emplace(std::string(tag), sections_.size());
    sections_.push_back(Section{std::string(tag), std::vector<std::uint8_t>(data.begin(), data.end())});
}

void StateFile::add_u32(std::string_view tag, std::uint32_t value) {
    std::vector<std::uint8_t> bytes;
    put_le(bytes, value, 4);
    add(tag, bytes);
}

void StateFile::add_u64(std::string_view tag, std::uint64_t value) {
    std::vector<std::uint8_t> bytes;
    put_le(bytes, value, 8);
    add(tag, bytes);
}

void StateFile::add_string(std::string_view tag, std::string_view value) {
    std::vector<std::uint8_t> bytes(value.begin(), value.end());
    add(tag, bytes);
}

bool StateFile::contains(std::string_view tag) const { return index_.find(tag) != index_.end(); }

std::span<const std::uint8_t> StateFile::section(std::string_view tag) const {
    auto it = index_.find(tag);
    if (it == index_.end()) {
        throw SnapshotError(SnapshotErrorKind::missing_section, source_,
                            "missing section '" + std::string(tag) + "'");
    }
    return sections_[it->second].data;
}

std::span<const std::uint8_t> StateFile::sized_section(std::string_view tag, std::size_t expected) const {
    auto bytes = section(tag);
    if (bytes.size() != expected) {
        corrupt(source_, "section '" + std::string(tag) + "' is " + std::to_string(bytes.size()) +
                             " bytes, expected " + std::to_string(expected));
    }
    return bytes;
}

std::uint32_t StateFile::get_u32(std::string_view tag) const {
    return static_cast<std::uint32_t>(get_le(sized_section(tag, 4), 0, 4));
}

std::uint64_t StateFile::get_u64(std::string_view tag) const { return get_le(sized_section(tag, 8), 0, 8); }

std::string StateFile::get_string(std::string_view tag) const {
    auto bytes = section(tag);
    return {bytes.begin(), bytes.end()};
}

std::vector<std::uint8_t> StateFile::serialize() const {
    std::uint64_t total = kHeaderSize + kTrailerSize;
    for (const auto& s : sections_)
        total += kSectionHeaderSize + align_up(s.tag.size()) + align_up(s.data.size());

    std::vector<std::uint8_t> out;
    out.reserve(static_cast<std::size_t>(total));
    out.insert(out.end(), kFileMagic.begin(), kFileMagic.end());
    out.insert(out.end(), kArchMagic.begin(), kArchMagic.end());
    put_le(out, kFormatVersion, 4);
    put_le(out, 0, 4);  // flags
    put_le(out, sections_.size(), 4);
    put_le(out, 0, 4);  // reserved
    put_le(out, total, 8);
    for (const auto& s : sections_) {
        put_le(out, s.tag.size(), 2);
        put_le(out, 0, 2);  // reserved
        put_le(out, s.data.size(), 4);
        out.insert(out.end(), s.tag.begin(), s.tag.end());
        pad_to_alignment(out);
        out.insert(out.end(), s.data.begin(), s.data.end());
        pad_to_alignment(out);
    }
    Sha256Digest digest = sha256(out);
    out.insert(out.end(), digest.begin(), digest.end());
    // The size computed up front is what the header promised.
    if (out.size() != total) throw std::logic_error("snapshot: serialised size mismatch");
    return out;
}

void StateFile::write(const std::string& path) const { write_file_atomic(path, serialize()); }

StateFile StateFile::parse(std::span<const std::uint8_t> bytes, const std::string& source,
                           const ParseOptions& options) {
    if (bytes.size() > options.max_size) {
        fail(SnapshotErrorKind::too_large, source,
             "state is " + std::to_string(bytes.size()) + " bytes, larger than the cap of " +
                 std::to_string(options.max_size) + " bytes");
    }
    check_header(bytes, source);

    const std::size_t body_end = bytes.size() - kTrailerSize;
    if (options.verify_checksum) {
        Sha256Digest digest = sha256(bytes.first(body_end));
        if (!std::equal(digest.begin(), digest.end(),
                        bytes.begin() + static_cast<std::ptrdiff_t>(body_end))) {
            corrupt(source, "checksum mismatch (file corrupt)");
        }
    }

    auto count = static_cast<std::uint32_t>(get_le(bytes, kOffSectionCount, 4));
    if (count > kMaxSections) {
        corrupt(source, "section count " + std::to_string(count) + " exceeds the cap of " +
                            std::to_string(kMaxSections));
    }

    StateFile file;
    file.source_ = source;
    // Every section takes at least kSectionHeaderSize + 8 bytes, so this
    // bound keeps a lying count from reserving more than the input justifies.
    file.sections_.reserve(std::min<std::size_t>(count, (body_end - kHeaderSize) / (kSectionHeaderSize + 8)));
    std::size_t pos = kHeaderSize;
    for (std::uint32_t i = 0; i < count; ++i) {
        const std::string where = "section " + std::to_string(i);
        // All lengths are compared against what remains before any copy.
        if (body_end - pos < kSectionHeaderSize) corrupt(source, where + ": header runs past the end");
        auto tag_len = static_cast<std::size_t>(get_le(bytes, pos, 2));
        auto reserved = get_le(bytes, pos + 2, 2);
        auto data_len = get_le(bytes, pos + 4, 4);
        pos += kSectionHeaderSize;
        if (reserved != 0) corrupt(source, where + ": reserved field is not zero");
        if (tag_len == 0 || tag_len > kMaxTagLength) {
            corrupt(source, where + ": tag length " + std::to_string(tag_len) + " out of range");
        }
        std::uint64_t tag_padded = align_up(tag_len);
        if (tag_padded > body_end - pos) corrupt(source, where + ": tag runs past the end");
        std::string tag(bytes.begin() + static_cast<std::ptrdiff_t>(pos),
                        bytes.begin() + static_cast<std::ptrdiff_t>(pos + tag_len));
        if (!is_valid_tag(tag)) corrupt(source, where + ": tag has invalid characters");
        if (!all_zero(bytes.subspan(pos + tag_len, static_cast<std::size_t>(tag_padded) - tag_len))) {
            corrupt(source, "section '" + tag + "': tag padding is not zero");
        }
        pos += static_cast<std::size_t>(tag_padded);
        std::uint64_t data_padded = align_up(data_len);
        if (data_padded > body_end - pos) {
            corrupt(source,
                    "section '" + tag + "': data length " + std::to_string(data_len) + " runs past the end");
        }
        auto data = bytes.subspan(pos, static_cast<std::size_t>(data_len));
        if (!all_zero(
                bytes.subspan(pos + data.size(), static_cast<std::size_t>(data_padded) - data.size()))) {
            corrupt(source, "section '" + tag + "': data padding is not zero");
        }
        pos += static_cast<std::size_t>(data_padded);
        if (file.contains(tag)) corrupt(source, "duplicate section '" + tag + "'");
        file.index_.emplace(tag, file.sections_.size());
        file.sections_.push_back(
            Section{std::move(tag), std::vector<std::uint8_t>(data.begin(), data.end())});
    }
    if (pos != body_end) {
        corrupt(source, std::to_string(body_end - pos) + " unexpected bytes after the last section");
    }
    return file;
}

StateFile StateFile::read(const std::string& path, const ParseOptions& options) {
    std::vector<std::uint8_t> bytes = read_file_capped(path, options.max_size);
    return parse(bytes, path, options);
}

}  // namespace forkvm::snapshot
