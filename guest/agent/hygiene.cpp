#include "guest/agent/hygiene.hpp"

#include <fcntl.h>
#include <linux/random.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

namespace forkvm::agent {
namespace {

// struct rand_pool_info with its flexible buffer sized for one post.
struct PoolInfo {
    int entropy_count;
    int buf_size;
    std::array<std::uint8_t, proto::kMailboxEntropySize> buf;
};
static_assert(offsetof(PoolInfo, buf) == sizeof(rand_pool_info));

class SystemActions final : public HygieneActions {
public:
    int add_entropy(std::span<const std::uint8_t> bytes) override {
        if (bytes.size() > proto::kMailboxEntropySize) return EINVAL;
        PoolInfo info{};
        info.buf_size = static_cast<int>(bytes.size());
        info.entropy_count = static_cast<int>(bytes.size() * 8);
        std::memcpy(info.buf.data(), bytes.data(), bytes.size());
        return urandom_ioctl(RNDADDENTROPY, &info);
    }
    int reseed_crng() override { return urandom_ioctl(RNDRESEEDCRNG, nullptr); }
    int get_clock(proto::MailboxClock& now) override {
        timespec ts{};
        if (::clock_gettime(CLOCK_REALTIME, &ts) != 0) return errno;
        now.seconds = ts.tv_sec;
        now.nanoseconds = static_cast<std::uint32_t>(ts.tv_nsec);
        return 0;
    }
    int set_clock(const proto::MailboxClock& clock) override {
        timespec ts{};
        ts.tv_sec = static_cast<time_t>(clock.seconds);
        ts.tv_nsec = static_cast<long>(clock.nanoseconds);
        return ::clock_settime(CLOCK_REALTIME, &ts) == 0 ? 0 : errno;
    }
    int set_hostname(std::string_view name) override {
        return ::sethostname(name.data(), name.size()) == 0 ? 0 : errno;
    }

private:
    // Opened per call: a post is applied rarely (once per resume), and an fd
    // kept open would be one more thing a clone inherits.
    static int urandom_ioctl(unsigned long request, void* arg) {
        const UniqueFd fd(::open("/dev/urandom", O_WRONLY | O_CLOEXEC));
        if (!fd) return errno;
        return ::ioctl(fd.get(), request, arg) == 0 ? 0 : errno;
    }
};

bool clock_before(const proto::MailboxClock& a, const proto::MailboxClock& b) {
    return a.seconds != b.seconds ? a.seconds < b.seconds : a.nanoseconds < b.nanoseconds;
}

}  // namespace

std::shared_ptr<HygieneActions> system_hygiene_actions() { return std::make_shared<SystemActions>(); }

MailboxWatcher::MailboxWatcher(const std::string& path, std::uint64_t offset,
                               std::shared_ptr<HygieneActions> actions)
    : offset_(offset), actions_(actions ? std::move(actions) : system_hygiene_actions()) {
    if (path.empty()) return;
    if (offset > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()) - proto::kMailboxPageSize) {
        std::fprintf(stderr, "forkvm-agent: mailbox offset %llu out of range; clone hygiene is off\n",
                     static_cast<unsigned long long>(offset));
        return;
    }
    fd_.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (fd_) return;
    const int err = errno;
    // Quiet where the mailbox is expected to be missing: no /dev/mem (unit
    // tests, containers) or an unprivileged agent (tests). In a VM the agent
    // is root and /dev/mem exists, so anything else is worth one line.
    if (err == ENOENT || ((err == EACCES || err == EPERM) && ::geteuid() != 0)) return;
    std::fprintf(stderr, "forkvm-agent: open %s: %s; clone hygiene is off\n", path.c_str(),
                 std::strerror(err));
}

MailboxCheck MailboxWatcher::check_and_apply() {
    if (!fd_) return MailboxCheck::inactive;
    std::array<std::uint8_t, proto::kMailboxPageSize> page{};
    std::size_t got = 0;
    while (got < page.size()) {
        const ssize_t n =
            ::pread(fd_.get(), page.data() + got, page.size() - got, static_cast<off_t>(offset_ + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            const int err = n < 0 ? errno : 0;
            ++stats_.read_failures;
            if (may_log()) {
                std::fprintf(stderr, "forkvm-agent: mailbox read at %#llx: %s\n",
                             static_cast<unsigned long long>(offset_ + got),
                             err != 0 ? std::strerror(err) : "short read");
            }
            return MailboxCheck::read_failed;
        }
        got += static_cast<std::size_t>(n);
    }

    const auto generation = proto::peek_mailbox_generation(page);
    if (!generation) return MailboxCheck::not_posted;
    if (*generation == last_generation_) return MailboxCheck::unchanged;
    last_generation_ = *generation;  // applied or rejected: never retried

    const auto decoded = proto::decode_mailbox(page);
    if (!decoded) {
        ++stats_.rejected;
        if (may_log()) {
            std::fprintf(stderr, "forkvm-agent: mailbox generation %llu rejected (%s)\n",
                         static_cast<unsigned long long>(*generation),
                         std::string(proto::mailbox_error_name(decoded.error)).c_str());
        }
        return MailboxCheck::rejected;
    }
    apply(*decoded.update);
    ++stats_.applied;
    return MailboxCheck::applied;
}

void MailboxWatcher::apply(const proto::MailboxUpdate& update) {
    const auto note = [this](const char* what, int err) {
        if (err == 0) return;
        ++stats_.action_failures;
        if (may_log()) std::fprintf(stderr, "forkvm-agent: mailbox %s: %s\n", what, std::strerror(err));
    };
    if ((update.flags & proto::kMailboxEntropy) != 0) {
        note("RNDADDENTROPY", actions_->add_entropy(update.entropy));
        // Reseed even if adding failed: the pool may still differ from the
        // golden VM's (interrupt timings since the resume).
        note("RNDRESEEDCRNG", actions_->reseed_crng());
    }
    if ((update.flags & proto::kMailboxClock) != 0) {
        proto::MailboxClock now;
        const int err = actions_->get_clock(now);
        if (err != 0) {
            note("clock_gettime", err);
            note("clock_settime", actions_->set_clock(update.clock));
        } else if (clock_before(now, update.clock)) {
            note("clock_settime", actions_->set_clock(update.clock));
        } else {
            ++stats_.clock_skipped;
        }
    }
    if ((update.flags & proto::kMailboxHostname) != 0) {
        note("sethostname", actions_->set_hostname(update.hostname));
        // Hostnames are sticky across posts (a resume carries the same one
        // again): a different one means this is a new VM, a clone.
        if (update.hostname != hostname_) {
            hostname_ = update.hostname;
            ++identity_changes_;
        }
    }
}

}  // namespace forkvm::agent
