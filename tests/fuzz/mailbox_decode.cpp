// Fuzz target: the clone-hygiene mailbox page (guest/protocol/mailbox.hpp)
// as the guest agent reads it (any bytes: guest root can write the page) and
// as the host's post_mailbox finds it before writing a new post.
// Invariants (abort() on violation):
//   - decode never crashes; it succeeds only with the magic, known flags, a
//     valid clock and a valid hostname, and then encode(decoded) decodes to
//     the same update;
//   - peek_mailbox_generation agrees with decode;
//   - post_mailbox over any old page writes a page that decodes, with the
//     generation old + 1 (never 0) and at least the flags asked for.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

#include "guest/protocol/mailbox.hpp"
#include "vmm/guest_memory.hpp"
#include "vmm/layout.hpp"
#include "vmm/mailbox.hpp"

using namespace forkvm;

namespace {

void check(bool condition) {
    if (!condition) std::abort();
}

void check_decode(std::span<const std::uint8_t> input) {
    const auto d = proto::decode_mailbox(input);
    check(d.update.has_value() == (d.error == proto::MailboxError::none));
    const auto generation = proto::peek_mailbox_generation(input);
    if (!d) {
        check(d.error != proto::MailboxError::none);
        if (d.error == proto::MailboxError::bad_magic || d.error == proto::MailboxError::too_short) {
            check(!generation.has_value());
        }
        return;
    }
    const proto::MailboxUpdate& u = *d.update;
    check(generation == u.generation);
    check((u.flags & ~proto::kMailboxAllFlags) == 0);
    check(u.clock.nanoseconds < 1'000'000'000U && u.clock.seconds >= 0);
    check(((u.flags & proto::kMailboxHostname) != 0) == !u.hostname.empty());
    check(u.hostname.size() <= proto::kMailboxHostnameMax);
    check(u.hostname.empty() || proto::valid_mailbox_hostname(u.hostname));
    std::array<std::uint8_t, proto::kMailboxPageSize> page{};
    check(proto::encode_mailbox(u, page) == proto::MailboxError::none);
    const auto again = proto::decode_mailbox(page);
    check(again && *again.update == u);
}

void check_post(std::span<const std::uint8_t> input) {
    static auto memory = vmm::GuestMemory::anonymous(vmm::layout::kHighMemory);
    auto slice = memory.slice(vmm::layout::kMailbox, vmm::layout::kMailboxSize);
    check(slice.has_value());
    std::fill(slice->begin(), slice->end(), std::uint8_t{0});
    std::memcpy(slice->data(), input.data(), std::min(input.size(), slice->size()));
    const std::uint64_t old = proto::peek_mailbox_generation(*slice).value_or(0);
    proto::MailboxUpdate want;
    // The last input byte picks the flags asked for (a clock-only resume or a full clone post).
    want.flags = !input.empty() && (input.back() & 1U) != 0 ? proto::kMailboxAllFlags : proto::kMailboxClock;
    want.hostname = "clone-1";
    const auto written = vmm::post_mailbox(memory, want);
    const auto d = proto::decode_mailbox(*slice);
    check(d && *d.update == written);
    check(written.generation == (old + 1 == 0 ? 1 : old + 1));
    check((written.flags & want.flags) == want.flags);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::span<const std::uint8_t> input(data, size);
    check_decode(input);
    check_post(input);
    return 0;
}
