#pragma once
// Clone hygiene, host side: posts fresh entropy, the host's wall clock and
// the clone's hostname in the mailbox page (layout::kMailbox, format in
// guest/protocol/mailbox.hpp). The guest agent applies a post before it
// handles its next request (guest/agent/hygiene.hpp).
//
// When to post (the VM must be paused: the page is written in place):
//   - before the first run of a restored or forked clone: entropy, clock and
//     hostname (the sandbox id);
//   - at every resume of a paused VM: the clock.
// Then send the agent a request (a Ping will do): it applies the post before
// handling it, so the clock is set at once rather than whenever the next
// client request happens to come.

#include <stdexcept>
#include <string>

#include "guest/protocol/mailbox.hpp"
#include "vmm/guest_memory.hpp"

namespace forkvm::vmm {

// The page is not guest RAM here, or the update is invalid (bad hostname).
class MailboxPostError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Writes `update` to the mailbox page and returns what was written.
// `update.flags` and `update.hostname` are the caller's; the rest is filled
// in: entropy from getrandom(2) when kMailboxEntropy is set, the current
// CLOCK_REALTIME when kMailboxClock is set, and generation = the page's
// generation + 1 (never 0), written last.
// Flags are sticky: a field the page already carried is carried again (with
// fresh entropy and clock, the same hostname unless a new one is given), so a
// clock-only post at a resume cannot wipe a clone's entropy and hostname that
// the agent has not applied yet. Re-applying them costs the agent nothing.
// Throws MailboxPostError, or SysError when getrandom/clock_gettime fail.
proto::MailboxUpdate post_mailbox(const GuestMemory& memory, proto::MailboxUpdate update);

}  // namespace forkvm::vmm
