#include "guest/protocol/mailbox.hpp"

#include <algorithm>
#include <cstring>

namespace forkvm::proto {
namespace {

constexpr std::uint32_t kNanosPerSecond = 1'000'000'000U;

// Fixed offsets, so plain little-endian loads/stores (not the stream Reader).
std::uint64_t load_le(std::span<const std::uint8_t> page, std::size_t off, std::size_t size) noexcept {
    std::uint64_t v = 0;
    for (std::size_t i = 0; i < size; ++i) v |= static_cast<std::uint64_t>(page[off + i]) << (8U * i);
    return v;
}

void store_le(std::span<std::uint8_t> page, std::size_t off, std::uint64_t v, std::size_t size) noexcept {
    for (std::size_t i = 0; i < size; ++i) page[off + i] = static_cast<std::uint8_t>(v >> (8U * i));
}

bool hostname_byte_ok(std::uint8_t c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.';
}

bool has_magic(std::span<const std::uint8_t> page) noexcept {
    return page.size() >= kMailboxUsedSize &&
           std::equal(kMailboxMagic.begin(), kMailboxMagic.end(), page.begin());
}

MailboxError check_update(const MailboxUpdate& u) noexcept {
    if ((u.flags & ~kMailboxAllFlags) != 0) return MailboxError::unknown_flags;
    if ((u.flags & kMailboxClock) != 0 && (u.clock.seconds < 0 || u.clock.nanoseconds >= kNanosPerSecond)) {
        return MailboxError::bad_clock;
    }
    if ((u.flags & kMailboxHostname) != 0) {
        if (u.hostname.empty() || u.hostname.size() > kMailboxHostnameMax) {
            return MailboxError::bad_hostname_length;
        }
        if (!valid_mailbox_hostname(u.hostname)) return MailboxError::bad_hostname;
    }
    return MailboxError::none;
}

}  // namespace

std::string_view mailbox_error_name(MailboxError error) noexcept {
    switch (error) {
        case MailboxError::none: return "none";
        case MailboxError::too_short: return "too_short";
        case MailboxError::bad_magic: return "bad_magic";
        case MailboxError::unknown_flags: return "unknown_flags";
        case MailboxError::bad_clock: return "bad_clock";
        case MailboxError::bad_hostname_length: return "bad_hostname_length";
        case MailboxError::bad_hostname: return "bad_hostname";
    }
    return "unknown";
}

bool valid_mailbox_hostname(std::string_view name) noexcept {
    if (name.empty() || name.size() > kMailboxHostnameMax) return false;
    return std::all_of(name.begin(), name.end(),
                       [](char c) { return hostname_byte_ok(static_cast<std::uint8_t>(c)); });
}

MailboxError encode_mailbox(const MailboxUpdate& update,
                            std::span<std::uint8_t, kMailboxPageSize> page) noexcept {
    if (const MailboxError e = check_update(update); e != MailboxError::none) return e;
    std::fill(page.begin(), page.end(), std::uint8_t{0});
    std::copy(kMailboxMagic.begin(), kMailboxMagic.end(), page.begin());
    store_le(page, kMailboxOffGeneration, update.generation, 8);
    store_le(page, kMailboxOffFlags, update.flags, 4);
    if ((update.flags & kMailboxClock) != 0) {
        store_le(page, kMailboxOffClockNsec, update.clock.nanoseconds, 4);
        store_le(page, kMailboxOffClockSec, static_cast<std::uint64_t>(update.clock.seconds), 8);
    }
    if ((update.flags & kMailboxHostname) != 0) {
        store_le(page, kMailboxOffHostnameLen, update.hostname.size(), 4);
        std::memcpy(page.data() + kMailboxOffHostname, update.hostname.data(), update.hostname.size());
    }
    if ((update.flags & kMailboxEntropy) != 0) {
        std::copy(update.entropy.begin(), update.entropy.end(), page.data() + kMailboxOffEntropy);
    }
    return MailboxError::none;
}

DecodedMailbox decode_mailbox(std::span<const std::uint8_t> page) {
    if (page.size() < kMailboxUsedSize) return {std::nullopt, MailboxError::too_short};
    if (!has_magic(page)) return {std::nullopt, MailboxError::bad_magic};
    MailboxUpdate u;
    u.generation = load_le(page, kMailboxOffGeneration, 8);
    u.flags = static_cast<std::uint32_t>(load_le(page, kMailboxOffFlags, 4));
    if ((u.flags & ~kMailboxAllFlags) != 0) return {std::nullopt, MailboxError::unknown_flags};
    if ((u.flags & kMailboxClock) != 0) {
        u.clock.nanoseconds = static_cast<std::uint32_t>(load_le(page, kMailboxOffClockNsec, 4));
        u.clock.seconds = static_cast<std::int64_t>(load_le(page, kMailboxOffClockSec, 8));
        if (u.clock.seconds < 0 || u.clock.nanoseconds >= kNanosPerSecond) {
            return {std::nullopt, MailboxError::bad_clock};
        }
    }
    const auto hostname_len = load_le(page, kMailboxOffHostnameLen, 4);
    if ((u.flags & kMailboxHostname) != 0) {
        // Checked before anything is copied: at most 64 bytes are ever allocated.
        if (hostname_len == 0 || hostname_len > kMailboxHostnameMax) {
            return {std::nullopt, MailboxError::bad_hostname_length};
        }
        const auto* first = page.data() + kMailboxOffHostname;
        u.hostname.assign(first, first + hostname_len);
        if (!valid_mailbox_hostname(u.hostname)) return {std::nullopt, MailboxError::bad_hostname};
    } else if (hostname_len != 0) {
        return {std::nullopt, MailboxError::bad_hostname_length};
    }
    if ((u.flags & kMailboxEntropy) != 0) {
        std::copy_n(page.data() + kMailboxOffEntropy, kMailboxEntropySize, u.entropy.begin());
    }
    return {std::move(u), MailboxError::none};
}

std::optional<std::uint64_t> peek_mailbox_generation(std::span<const std::uint8_t> page) noexcept {
    if (!has_magic(page)) return std::nullopt;
    return load_le(page, kMailboxOffGeneration, 8);
}

}  // namespace forkvm::proto
