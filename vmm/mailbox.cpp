#include "vmm/mailbox.hpp"

#include <sys/random.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>

#include "vmm/layout.hpp"
#include "vmm/sys_error.hpp"

namespace forkvm::vmm {
namespace {

static_assert(layout::kMailboxSize == proto::kMailboxPageSize);

void fill_random(std::span<std::uint8_t> out) {
    std::size_t got = 0;
    while (got < out.size()) {
        const ssize_t n = ::getrandom(out.data() + got, out.size() - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw SysError("getrandom", errno);
        }
        got += static_cast<std::size_t>(n);
    }
}

proto::MailboxClock realtime_now() {
    timespec ts{};
    if (::clock_gettime(CLOCK_REALTIME, &ts) != 0) throw SysError("clock_gettime(CLOCK_REALTIME)", errno);
    return {static_cast<std::int64_t>(ts.tv_sec), static_cast<std::uint32_t>(ts.tv_nsec)};
}

}  // namespace

proto::MailboxUpdate post_mailbox(const GuestMemory& memory, proto::MailboxUpdate update) {
    auto slice = memory.slice(layout::kMailbox, layout::kMailboxSize);
    if (!slice) {
        throw MailboxPostError(fmt::format("mailbox page {:#x} is not in guest memory", layout::kMailbox));
    }
    const std::span<std::uint8_t, proto::kMailboxPageSize> page(slice->data(), proto::kMailboxPageSize);
    if ((update.flags & ~proto::kMailboxAllFlags) != 0) {
        throw MailboxPostError(fmt::format("mailbox flags {:#x}: unknown bits", update.flags));
    }

    // The old page: guest root can write it, so it is decoded like any
    // untrusted input; a page that does not decode contributes nothing but
    // its generation (when it has the magic).
    const std::uint64_t old_generation = proto::peek_mailbox_generation(page).value_or(0);
    if (const auto old = proto::decode_mailbox(page)) {
        if ((old.update->flags & proto::kMailboxHostname) != 0 &&
            (update.flags & proto::kMailboxHostname) == 0) {
            update.hostname = old.update->hostname;
        }
        update.flags |= old.update->flags;
    }

    if ((update.flags & proto::kMailboxHostname) != 0) {
        if (!proto::valid_mailbox_hostname(update.hostname)) {
            throw MailboxPostError(
                fmt::format("mailbox hostname '{}' is not 1..64 bytes of [A-Za-z0-9.-]", update.hostname));
        }
    } else {
        update.hostname.clear();
    }
    update.entropy.fill(0);
    if ((update.flags & proto::kMailboxEntropy) != 0) fill_random(update.entropy);
    update.clock = {};
    if ((update.flags & proto::kMailboxClock) != 0) update.clock = realtime_now();
    update.generation = old_generation + 1 == 0 ? 1 : old_generation + 1;

    // Encode aside, then copy everything but the generation, then the
    // generation: the agent keys on it, so it goes last (the VM is paused,
    // the fence only orders the host's own stores).
    std::array<std::uint8_t, proto::kMailboxPageSize> fresh{};
    if (const auto err = proto::encode_mailbox(update, fresh); err != proto::MailboxError::none) {
        throw MailboxPostError(fmt::format("mailbox update rejected: {}", proto::mailbox_error_name(err)));
    }
    constexpr std::size_t kGen = proto::kMailboxOffGeneration;
    std::memcpy(page.data(), fresh.data(), kGen);
    std::memcpy(page.data() + kGen + 8, fresh.data() + kGen + 8, fresh.size() - kGen - 8);
    std::atomic_thread_fence(std::memory_order_release);
    std::memcpy(page.data() + kGen, fresh.data() + kGen, 8);
    return update;
}

}  // namespace forkvm::vmm
