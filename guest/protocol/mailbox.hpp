#pragma once
// The clone-hygiene mailbox: one 4 KiB page of guest-physical memory
// (vmm/layout.hpp kMailbox) that the host fills while the VM is paused and
// the guest agent reads (through /dev/mem) before it handles its next
// request. It carries what every clone must not share with its golden VM:
// fresh entropy, the host's wall clock and the clone's own hostname.
// See docs/agent-protocol.md ("Mailbox page").
//
// Shared by the host and the static guest agent: standard library only, no
// KVM or Linux headers. encode/decode are pure; decode treats the page as
// untrusted (guest root can write it) and never crashes or allocates more
// than the 64-byte hostname.
//
// Layout (little-endian; offsets in bytes; the rest of the page is zero when
// written and ignored when read):
//   0   magic          8 bytes "FKVMMBX1"
//   8   generation     u64  bumped by every post; the agent applies a page
//                           whose generation differs from the last it applied
//   16  flags          u32  kMailboxEntropy | kMailboxClock | kMailboxHostname
//   20  clock_nsec     u32  < 1e9
//   24  clock_sec      i64  >= 0, host CLOCK_REALTIME when posted
//   32  hostname_len   u32  1..64 when kMailboxHostname is set, else 0
//   36  hostname       64 bytes, [A-Za-z0-9.-], unused bytes zero
//   100 entropy        64 bytes
//   164 end of the used part

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace forkvm::proto {

inline constexpr std::size_t kMailboxPageSize = 4096;
inline constexpr std::array<std::uint8_t, 8> kMailboxMagic = {'F', 'K', 'V', 'M', 'M', 'B', 'X', '1'};
inline constexpr std::size_t kMailboxEntropySize = 64;
inline constexpr std::size_t kMailboxHostnameMax = 64;  // Linux HOST_NAME_MAX

// Field offsets (documented above; the tests and the fuzz target use them).
inline constexpr std::size_t kMailboxOffGeneration = 8;
inline constexpr std::size_t kMailboxOffFlags = 16;
inline constexpr std::size_t kMailboxOffClockNsec = 20;
inline constexpr std::size_t kMailboxOffClockSec = 24;
inline constexpr std::size_t kMailboxOffHostnameLen = 32;
inline constexpr std::size_t kMailboxOffHostname = 36;
inline constexpr std::size_t kMailboxOffEntropy = kMailboxOffHostname + kMailboxHostnameMax;
inline constexpr std::size_t kMailboxUsedSize = kMailboxOffEntropy + kMailboxEntropySize;

// Which parts of the page are present.
inline constexpr std::uint32_t kMailboxEntropy = 1U << 0U;
inline constexpr std::uint32_t kMailboxClock = 1U << 1U;
inline constexpr std::uint32_t kMailboxHostname = 1U << 2U;
inline constexpr std::uint32_t kMailboxAllFlags = kMailboxEntropy | kMailboxClock | kMailboxHostname;

struct MailboxClock {
    std::int64_t seconds = 0;
    std::uint32_t nanoseconds = 0;
    friend bool operator==(const MailboxClock&, const MailboxClock&) = default;
};

// One post. Fields whose flag is not set are ignored by encode and come back
// empty/zero from decode.
struct MailboxUpdate {
    std::uint64_t generation = 0;
    std::uint32_t flags = 0;
    MailboxClock clock;
    std::string hostname;
    std::array<std::uint8_t, kMailboxEntropySize> entropy{};
    friend bool operator==(const MailboxUpdate&, const MailboxUpdate&) = default;
};

enum class MailboxError : std::uint8_t {
    none = 0,
    too_short,      // fewer than kMailboxUsedSize bytes
    bad_magic,      // nothing posted yet (a zero page) or not a mailbox
    unknown_flags,  // flag bits this version does not know
    bad_clock,      // negative seconds or nanoseconds >= 1e9
    bad_hostname_length,
    bad_hostname,  // a byte outside [A-Za-z0-9.-], or empty
};

[[nodiscard]] std::string_view mailbox_error_name(MailboxError error) noexcept;

// Whether `name` may be posted as a hostname: 1..64 bytes of [A-Za-z0-9.-].
[[nodiscard]] bool valid_mailbox_hostname(std::string_view name) noexcept;

// Writes `update` into `page` (all 4096 bytes: unused parts are zeroed).
// Fails, leaving `page` untouched, when the update could not be decoded back
// (bad hostname, bad clock, unknown flags).
[[nodiscard]] MailboxError encode_mailbox(const MailboxUpdate& update,
                                          std::span<std::uint8_t, kMailboxPageSize> page) noexcept;

struct [[nodiscard]] DecodedMailbox {
    std::optional<MailboxUpdate> update;  // set iff error == none
    MailboxError error = MailboxError::none;
    explicit operator bool() const noexcept { return update.has_value(); }
};

// Reads a page (any length; only the first kMailboxUsedSize bytes matter).
[[nodiscard]] DecodedMailbox decode_mailbox(std::span<const std::uint8_t> page);

// The page's generation when it carries the magic (a cheap pre-check before
// a full decode), nullopt otherwise.
[[nodiscard]] std::optional<std::uint64_t> peek_mailbox_generation(
    std::span<const std::uint8_t> page) noexcept;

}  // namespace forkvm::proto
