#pragma once
// Clone hygiene, guest side: every VM clone starts with its golden VM's RNG
// state, clock and hostname. The host posts fresh values in the mailbox
// page (guest/protocol/mailbox.hpp) while the clone is paused; the agent's
// MailboxWatcher reads the page (one pread through /dev/mem) before it
// handles the next request and, when the generation changed, applies it:
// entropy (RNDADDENTROPY, then RNDRESEEDCRNG so it is used at once), the
// wall clock, the hostname. See docs/agent-protocol.md ("Mailbox page").

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "guest/agent/options.hpp"
#include "guest/protocol/mailbox.hpp"
#include "vmm/unique_fd.hpp"  // header-only, std-only: shared with the host

namespace forkvm::agent {

// What applying a page does. Injectable: unit tests (not root) record the
// calls instead. Each action returns 0 or an errno value.
class HygieneActions {
public:
    virtual ~HygieneActions() = default;
    // Mixes `bytes` into the kernel pool, credited as 8 bits per byte.
    virtual int add_entropy(std::span<const std::uint8_t> bytes) = 0;
    // Reseeds the CRNG from the pool now (without it the new entropy is only
    // used at the next scheduled reseed, up to a minute later).
    virtual int reseed_crng() = 0;
    // The current CLOCK_REALTIME (to decide whether `set_clock` moves it forward).
    virtual int get_clock(proto::MailboxClock& now) = 0;
    virtual int set_clock(const proto::MailboxClock& clock) = 0;
    virtual int set_hostname(std::string_view name) = 0;
};

// The real system calls: ioctl(RNDADDENTROPY) and ioctl(RNDRESEEDCRNG) on
// /dev/urandom, clock_gettime/clock_settime(CLOCK_REALTIME), sethostname.
// All need root (CAP_SYS_ADMIN / CAP_SYS_TIME).
[[nodiscard]] std::shared_ptr<HygieneActions> system_hygiene_actions();

enum class MailboxCheck : std::uint8_t {
    inactive,     // no mailbox source (no /dev/mem: unit tests, or not root)
    not_posted,   // no magic: nothing was ever posted (a freshly booted VM)
    unchanged,    // the generation last seen
    applied,      // a new generation, applied (some actions may have failed)
    rejected,     // a new generation whose page does not decode: ignored
    read_failed,  // pread failed or came back short
};

struct MailboxStats {
    std::uint64_t applied = 0;   // generations applied
    std::uint64_t rejected = 0;  // generations that did not decode
    std::uint64_t read_failures = 0;
    std::uint64_t action_failures = 0;  // single actions that returned an error
    std::uint64_t clock_skipped = 0;    // posted clocks behind the guest's (not applied)
};

class MailboxWatcher {
public:
    // Opens `path` (read-only) for preads of one page at `offset`. A missing
    // file, an empty path, or (when not root) a permission error leaves the
    // watcher inactive without a log line; other open errors are logged once.
    // `actions` null means system_hygiene_actions().
    MailboxWatcher(const std::string& path, std::uint64_t offset, std::shared_ptr<HygieneActions> actions);
    explicit MailboxWatcher(const Options& options)
        : MailboxWatcher(options.mailbox_path, options.mailbox_offset, options.hygiene_actions) {}

    MailboxWatcher(const MailboxWatcher&) = delete;
    MailboxWatcher& operator=(const MailboxWatcher&) = delete;
    MailboxWatcher(MailboxWatcher&&) = default;
    MailboxWatcher& operator=(MailboxWatcher&&) = default;
    ~MailboxWatcher() = default;

    // Reads the page; when its generation differs from the last one seen,
    // applies it in the order entropy, reseed, clock, hostname. The clock is
    // only moved forward: a post applied late (the first request came long
    // after the resume) must not set the time back. Never fails: errors are
    // logged (a few times at most) and counted in stats().
    MailboxCheck check_and_apply();

    [[nodiscard]] bool active() const noexcept { return fd_.valid(); }
    // The generation of the last page applied or rejected (0: none yet).
    [[nodiscard]] std::uint64_t last_generation() const noexcept { return last_generation_; }
    [[nodiscard]] const MailboxStats& stats() const noexcept { return stats_; }
    // How many times an applied post named a hostname other than the last
    // one: each is a new VM (a clone or a restored snapshot taking its
    // identity), never the same VM resumed.
    [[nodiscard]] std::uint64_t identity_changes() const noexcept { return identity_changes_; }

private:
    void apply(const proto::MailboxUpdate& update);
    bool may_log() noexcept { return logs_ < kMaxLogs ? (++logs_, true) : false; }

    static constexpr int kMaxLogs = 16;

    UniqueFd fd_;
    std::uint64_t offset_ = 0;
    std::shared_ptr<HygieneActions> actions_;
    std::uint64_t last_generation_ = 0;
    std::string hostname_;  // the last one applied
    std::uint64_t identity_changes_ = 0;
    MailboxStats stats_;
    int logs_ = 0;
};

}  // namespace forkvm::agent
