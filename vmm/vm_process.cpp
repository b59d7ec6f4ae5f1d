#include "vmm/vm_process.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/mount.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <limits>
#include <random>
#include <set>
#include <vector>

#include "snapshot/manifest.hpp"
#include "snapshot/snapshot_error.hpp"
#include "vmm/control_protocol.hpp"
#include "vmm/sys_error.hpp"

extern char** environ;

namespace forkvm::vmm {
namespace {

constexpr int kChildControlFd = 3;
constexpr int kChildAgentFd = 4;
constexpr int kChildConsoleFd = 5;
constexpr int kChildKvmFd = 6;
constexpr int kLastChildFd = kChildKvmFd;

// posix_spawn's dup2 onto the same number would keep FD_CLOEXEC set; keep
// our fds away from the numbers the child expects.
UniqueFd above_child_fds(UniqueFd fd) {
    if (fd.get() > kLastChildFd) return fd;
    int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, kLastChildFd + 1);
    if (moved < 0) throw SysError("fcntl F_DUPFD_CLOEXEC", errno);
    return UniqueFd(moved);
}

std::pair<UniqueFd, UniqueFd> make_socketpair(int type) {
    int sv[2];
    if (::socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) != 0) throw SysError("socketpair", errno);
    return {above_child_fds(UniqueFd(sv[0])), above_child_fds(UniqueFd(sv[1]))};
}

// Whether any process on the host runs as `uid` (another forkvm server
// sharing the range, say). Only spawned VMs take a uid (golden VM,
// zygotes, restores), so a walk over /proc per spawn is cheap.
bool uid_runs_a_process(uid_t uid) {
    DIR* d = ::opendir("/proc");
    if (d == nullptr) return false;
    const std::string wanted = std::to_string(uid);
    bool found = false;
    while (dirent* e = ::readdir(d)) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        std::ifstream status(std::string("/proc/") + e->d_name + "/status");
        std::string key, real;
        while (status >> key) {
            if (key == "Uid:") {
                status >> real;
                break;
            }
            status.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
        }
        if (real == wanted) {
            found = true;
            break;
        }
    }
    ::closedir(d);
    return found;
}

// Hands out jail uids: a uid is free again when the last VM process using
// it (a spawned one and its fork children) has been reaped. The walk starts
// at a random place in the range and skips uids some process on the host
// runs as, so two servers sharing a range keep their VMs apart.
class UidAllocator {
public:
    static UidAllocator& instance() {
        static UidAllocator allocator;
        return allocator;
    }

    std::shared_ptr<const uid_t> acquire(const JailOptions& jail) {
        std::lock_guard lock(mu_);
        for (std::uint32_t tries = 0; tries < jail.uid_count; ++tries) {
            const uid_t uid = jail.uid_base + (next_++ % jail.uid_count);
            if (uid == 0 || in_use_.contains(uid) || uid_runs_a_process(uid)) continue;
            in_use_.insert(uid);
            return {new uid_t(uid), [this](const uid_t* u) {
                        release(*u);
                        delete u;
                    }};
        }
        throw VmProcessError(fmt::format("no free jail uid in [{}, {}): every one runs a VM", jail.uid_base,
                                         static_cast<std::uint64_t>(jail.uid_base) + jail.uid_count));
    }

private:
    void release(uid_t uid) {
        std::lock_guard lock(mu_);
        in_use_.erase(uid);
    }

    std::mutex mu_;
    std::set<uid_t> in_use_;
    std::uint32_t next_ = std::random_device{}();
};

// Guest memory + VMM overhead, without wrapping around.
std::uint64_t memory_limit(std::uint64_t memory_bytes, std::uint64_t overhead) {
    return memory_bytes > std::numeric_limits<std::uint64_t>::max() - overhead
               ? std::numeric_limits<std::uint64_t>::max()
               : memory_bytes + overhead;
}

// Gives `dir` and what a VM process wrote into it back to us.
void take_back_ownership(int dir_fd) {
    const uid_t uid = ::geteuid();
    const gid_t gid = ::getegid();
    int copy = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) return;
    DIR* d = ::fdopendir(copy);
    if (d == nullptr) {
        ::close(copy);
        return;
    }
    while (dirent* e = ::readdir(d)) {
        if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
        (void)::fchownat(dir_fd, e->d_name, uid, gid, AT_SYMLINK_NOFOLLOW);
    }
    ::closedir(d);
    (void)::fchown(dir_fd, uid, gid);
}

struct SpawnAttributes {
    posix_spawn_file_actions_t actions{};
    posix_spawnattr_t attr{};
    SpawnAttributes() {
        posix_spawn_file_actions_init(&actions);
        posix_spawnattr_init(&attr);
    }
    ~SpawnAttributes() {
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attr);
    }
    SpawnAttributes(const SpawnAttributes&) = delete;
    SpawnAttributes& operator=(const SpawnAttributes&) = delete;
};

}  // namespace

std::unique_ptr<VmProcess> VmProcess::spawn(const VmConfig& config, const SpawnOptions& options) {
    if (auto problems = validate(config); !problems.empty()) {
        throw VmProcessError("invalid VM config: " + problems.front().to_string());
    }
    auto vm = spawn_process(options, config.memory_mb << 20);
    vm->request({{"op", "boot"}, {"config", control::config_to_json(config)}}, options.boot_timeout);
    return vm;
}

namespace {

nlohmann::json clone_request(std::string_view op, const CloneOptions& clone) {
    nlohmann::json msg{{"op", op}, {"paused", clone.paused}};
    if (!clone.hostname.empty()) msg["hostname"] = clone.hostname;
    return msg;
}

}  // namespace

std::unique_ptr<VmProcess> VmProcess::restore(const std::string& dir, const CloneOptions& clone,
                                              const SpawnOptions& options) {
    // The memory limit comes from the manifest as we read it, not from the
    // VM. An unreadable manifest is the VM process's to report (it reads
    // the same one and refuses the restore with the snapshot error).
    std::uint64_t memory_bytes = 0;
    try {
        memory_bytes =
            snapshot::read_manifest(dir + "/" + std::string(snapshot::kManifestFileName)).memory_size;
    } catch (const snapshot::SnapshotError&) {  // NOLINT(bugprone-empty-catch): see above
    }
    auto vm = spawn_process(options, memory_bytes);
    nlohmann::json msg = clone_request("restore", clone);
    msg["dir"] = dir;
    vm->request(msg, options.boot_timeout);
    return vm;
}

void VmProcess::snapshot(const std::string& dir, Clock::duration timeout) {
    // A jailed VM process has no path to `dir`: it gets the directory as an
    // fd, and ownership of it while it writes.
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) throw VmProcessError(fmt::format("snapshot: cannot create {}: {}", dir, ec.message()));
    UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir_fd) throw SysError("open " + dir, errno);
    if (uid_ && ::fchown(dir_fd.get(), *uid_, static_cast<gid_t>(*uid_)) != 0) {
        throw SysError("chown " + dir + " to the VM's uid", errno);
    }
    // A jailed process gets the directory as the root of a detached mount
    // of its own: ".." from there stays there, so the fd is no way out of
    // the jail to the rest of our file system.
    UniqueFd view;
    if (uid_) {
        view.reset(static_cast<int>(
            ::syscall(SYS_open_tree, AT_FDCWD, dir.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC)));
        if (!view) throw SysError("open_tree " + dir, errno);
    }
    const std::array<int, 1> fds{uid_ ? view.get() : dir_fd.get()};
    try {
        request({{"op", "snapshot"}, {"dir", dir}}, timeout, fds);
    } catch (...) {
        if (uid_) take_back_ownership(dir_fd.get());
        throw;
    }
    if (uid_) take_back_ownership(dir_fd.get());
}

std::string VmProcess::probe(const std::string& name, Clock::duration timeout) {
    return request({{"op", "probe"}, {"probe", name}}, timeout).value("result", "");
}

std::unique_ptr<VmProcess> VmProcess::fork(const CloneOptions& clone, Clock::duration timeout) {
    auto [control_host, control_child] = make_socketpair(SOCK_SEQPACKET);
    auto [agent_host, agent_child] = make_socketpair(SOCK_STREAM);
    const std::array<int, 2> fds{control_child.get(), agent_child.get()};
    auto reply = request(clone_request("fork", clone), timeout, fds);
    control_child.reset();
    agent_child.reset();
    // The pid comes from a process that runs guest code: act on it only if
    // the kernel says it is a live child of ours (the clone is made with
    // CLONE_PARENT), never on -1, 0 or someone else's process.
    if (!reply.contains("pid") || !reply["pid"].is_number_integer()) {
        throw VmProcessError("fork: the VM process answered without a pid");
    }
    const auto child_pid = reply["pid"].get<std::int64_t>();
    siginfo_t info{};
    if (child_pid <= 0 || child_pid > std::numeric_limits<pid_t>::max() ||
        ::waitid(P_PID, static_cast<id_t>(child_pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
        throw VmProcessError(
            fmt::format("fork: the VM process answered pid {}, which is not a child of ours", child_pid));
    }
    std::unique_ptr<VmProcess> child(
        new VmProcess(static_cast<pid_t>(child_pid), std::move(control_host), std::move(agent_host), uid_));
    // Out of our cgroup into its own before it builds its VM.
    const auto [limits, memory_bytes] = [this] {
        std::lock_guard lock(mu_);
        return std::pair(limits_, memory_bytes_);
    }();
    child->enter_cgroup(limits, memory_bytes);
    // The child waits for this before it builds its VM (vm_process_main.cpp).
    if (!control::send_message(child->control_fd_.get(), {{"op", "start"}}))
        throw SysError("send start to the forked VM process", errno);
    child->wait_forked(timeout);  // on failure, child's destructor kills and reaps it
    return child;
}

void VmProcess::wait_forked(Clock::duration timeout) {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, timeout, [this] { return forked_event_.has_value() || channel_closed_; });
    if (!forked_event_) {
        throw VmProcessError(
            fmt::format("forked VM process {} {}", pid_,
                        channel_closed_ ? "exited before it was ready" : "did not report in time"));
    }
    if (!forked_event_->value("ok", false)) {
        throw VmProcessError("fork failed in the child: " + forked_event_->value("error", "unknown error"));
    }
}

std::unique_ptr<VmProcess> VmProcess::spawn_process(const SpawnOptions& options, std::uint64_t memory_bytes) {
    if (options.forkvm_binary.empty() || ::access(options.forkvm_binary.c_str(), X_OK) != 0) {
        throw VmProcessError("forkvm binary '" + options.forkvm_binary + "' is not executable");
    }
    auto [control_host, control_child] = make_socketpair(SOCK_SEQPACKET);
    auto [agent_host, agent_child] = make_socketpair(SOCK_STREAM);

    SpawnAttributes sa;
    posix_spawn_file_actions_addopen(&sa.actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&sa.actions, control_child.get(), kChildControlFd);
    posix_spawn_file_actions_adddup2(&sa.actions, agent_child.get(), kChildAgentFd);
    UniqueFd console_dup;
    if (options.console_fd >= 0) {
        console_dup = above_child_fds(UniqueFd(::fcntl(options.console_fd, F_DUPFD_CLOEXEC, 0)));
        posix_spawn_file_actions_adddup2(&sa.actions, console_dup.get(), kChildConsoleFd);
    }
    UniqueFd kvm_dup;
    if (options.kvm_device_fd >= 0) {
        kvm_dup = above_child_fds(UniqueFd(::fcntl(options.kvm_device_fd, F_DUPFD_CLOEXEC, 0)));
        posix_spawn_file_actions_adddup2(&sa.actions, kvm_dup.get(), kChildKvmFd);
    }
    // The child starts with default signal handling and an empty mask,
    // whatever the caller (a server with its own signal set-up) had.
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&sa.attr, &all);
    posix_spawnattr_setsigmask(&sa.attr, &none);
    posix_spawnattr_setflags(&sa.attr, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

    std::vector<std::string> args = {options.forkvm_binary, "vmm",
                                     "--control-fd",        std::to_string(kChildControlFd),
                                     "--agent-fd",          std::to_string(kChildAgentFd),
                                     "--parent-pid",        std::to_string(::getpid())};
    if (options.console_fd >= 0) {
        args.push_back("--console-fd");
        args.push_back(std::to_string(kChildConsoleFd));
    }
    if (options.kvm_device_fd >= 0) {
        args.push_back("--kvm-fd");
        args.push_back(std::to_string(kChildKvmFd));
    }
    std::shared_ptr<const uid_t> uid;
    if (options.jail.enabled) {
        uid = UidAllocator::instance().acquire(options.jail);
        args.push_back("--jail-uid");
        args.push_back(std::to_string(*uid));
    }
    args.push_back("--seccomp");
    args.push_back(std::string(seccomp_mode_name(options.jail.seccomp)));
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);

    pid_t pid = 0;
    // Nothing else of ours reaches a process that runs guest code: no other
    // fd (client connections, listening sockets, files: Boost.Asio's are
    // not close-on-exec) and no environment (API keys may be in it).
    posix_spawn_file_actions_addclosefrom_np(&sa.actions, kLastChildFd + 1);
    char* no_environment[] = {nullptr};
    int rc = ::posix_spawn(&pid, options.forkvm_binary.c_str(), &sa.actions, &sa.attr, argv.data(),
                           no_environment);
    if (rc != 0) throw SysError("posix_spawn " + options.forkvm_binary, rc);
    control_child.reset();
    agent_child.reset();
    std::unique_ptr<VmProcess> vm(
        new VmProcess(pid, std::move(control_host), std::move(agent_host), std::move(uid)));
    vm->enter_cgroup(options.limits, memory_bytes);  // on failure, ~VmProcess kills and reaps it
    return vm;
}

void VmProcess::enter_cgroup(const ResourceLimits& limits, std::uint64_t memory_bytes) {
    {
        std::lock_guard lock(mu_);
        limits_ = limits;
        memory_bytes_ = memory_bytes;
    }
    if (!limits.cgroups) return;
    CgroupLimits l;
    l.memory_max =
        limits.memory_max != 0 ? limits.memory_max : memory_limit(memory_bytes, limits.memory_overhead);
    l.pids_max = limits.pids_max;
    l.cpu_quota_percent = limits.cpu_quota_percent;
    auto group = limits.cgroups->place(pid_, l);
    std::lock_guard lock(mu_);
    cgroup_ = std::move(group);
}

std::map<std::string, std::string> VmProcess::cgroup_dirs() const {
    std::lock_guard lock(mu_);
    return cgroup_ ? cgroup_->dirs() : std::map<std::string, std::string>{};
}

VmProcess::VmProcess(pid_t pid, UniqueFd control, UniqueFd agent, std::shared_ptr<const uid_t> uid)
    : pid_(pid), uid_(std::move(uid)), control_fd_(std::move(control)), agent_fd_(std::move(agent)) {
    reader_ = std::thread([this] { reader_main(); });
}

VmProcess::~VmProcess() {
    {
        std::lock_guard lock(mu_);
        if (!reaped_) ::kill(pid_, SIGKILL);
    }
    reap(true);
    ::shutdown(control_fd_.get(), SHUT_RDWR);
    if (reader_.joinable()) reader_.join();
}

// Why the process ended without saying so itself.
std::string VmProcess::exit_reason_locked() const {
    if (cgroup_ && cgroup_->oom_kills() > 0) {
        return fmt::format(
            "VM process killed by the kernel: it reached its memory limit ({} MiB of host memory)",
            (limits_.memory_max != 0 ? limits_.memory_max
                                     : memory_limit(memory_bytes_, limits_.memory_overhead)) >>
                20);
    }
    return "VM process exited";
}

void VmProcess::reader_main() {
    for (;;) {
        auto msg = control::recv_message(control_fd_.get());
        std::lock_guard lock(mu_);
        if (!msg) {
            channel_closed_ = true;
            if (!stopped_reason_) stopped_reason_ = exit_reason_locked();
            cv_.notify_all();
            return;
        }
        const std::string event = msg->value("event", "");
        if (event == "stopped") {
            stopped_reason_ = msg->value("reason", "stopped");
            cv_.notify_all();
        } else if (event == "forked") {
            forked_event_ = std::move(*msg);
            cv_.notify_all();
        } else if (msg->contains("id") && (*msg)["id"].is_number_unsigned()) {
            auto it = pending_.find((*msg)["id"].get<std::uint64_t>());
            if (it != pending_.end()) it->second = std::move(*msg);
            cv_.notify_all();
        }
    }
}

nlohmann::json VmProcess::request(nlohmann::json msg, Clock::duration timeout, std::span<const int> fds) {
    const std::string op = msg.value("op", "?");
    std::unique_lock lock(mu_);
    if (channel_closed_) throw VmProcessError(fmt::format("VM process {} is gone ({})", pid_, op));
    const std::uint64_t id = next_id_++;
    msg["id"] = id;
    pending_[id] = std::nullopt;
    if (!control::send_message(control_fd_.get(), msg, fds)) {
        pending_.erase(id);
        throw SysError("send to VM process", errno);
    }
    bool answered = cv_.wait_for(lock, timeout, [&] { return pending_[id].has_value() || channel_closed_; });
    std::optional<nlohmann::json> reply = std::move(pending_[id]);
    pending_.erase(id);
    if (!reply) {
        if (!answered)
            throw VmProcessError(fmt::format("VM process {} did not answer '{}' in time", pid_, op));
        throw VmProcessError(fmt::format("VM process {} exited during '{}'{}", pid_, op,
                                         stopped_reason_ ? ": " + *stopped_reason_ : ""));
    }
    if (!reply->value("ok", false)) {
        throw VmProcessError(fmt::format("{} failed: {}", op, reply->value("error", "unknown error")),
                             reply->value("snapshot_error", ""));
    }
    return *reply;
}

void VmProcess::pause(Clock::duration timeout) { request({{"op", "pause"}}, timeout); }
void VmProcess::resume(Clock::duration timeout, const std::string& hostname) {
    nlohmann::json msg = {{"op", "resume"}};
    if (!hostname.empty()) msg["hostname"] = hostname;
    request(msg, timeout);
}

VmStatus VmProcess::status(Clock::duration timeout) {
    {
        std::lock_guard lock(mu_);
        if (channel_closed_) {
            VmStatus exited;
            exited.state = "exited";
            exited.reason = stopped_reason_.value_or("VM process exited");
            return exited;
        }
    }
    auto r = request({{"op", "status"}}, timeout);
    return {r.value("state", "?"),
            r.value("reason", ""),
            r.value("unhandled_io", std::uint64_t{0}),
            r.value("agent_dropped_bytes", std::uint64_t{0}),
            r.value("io_exits", std::uint64_t{0}),
            r.value("mmio_exits", std::uint64_t{0}),
            r.value("agent_device", "")};
}

std::string VmProcess::console_tail(std::size_t max_bytes, Clock::duration timeout) {
    auto r = request({{"op", "console"}, {"max_bytes", max_bytes}}, timeout);
    return r.value("console", "");
}

void VmProcess::stop(Clock::duration timeout) {
    try {
        request({{"op", "stop"}}, timeout);
    } catch (const std::exception&) {
        // Already gone, or not answering: the kill below handles both.
    }
    auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
        reap(false);
        std::lock_guard lock(mu_);
        if (reaped_) break;
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    {
        std::lock_guard lock(mu_);
        if (!reaped_) ::kill(pid_, SIGKILL);
    }
    reap(true);
}

void VmProcess::reap(bool block) {
    std::lock_guard lock(mu_);
    if (reaped_) return;
    int status = 0;
    pid_t r = 0;
    do {
        r = ::waitpid(pid_, &status, block ? 0 : WNOHANG);
    } while (r < 0 && errno == EINTR);
    if (r == pid_ || (r < 0 && errno == ECHILD)) reaped_ = true;
}

std::optional<std::string> VmProcess::stopped_reason() const {
    std::lock_guard lock(mu_);
    return stopped_reason_;
}

bool VmProcess::wait_stopped(Clock::time_point deadline) const {
    std::unique_lock lock(mu_);
    return cv_.wait_until(lock, deadline, [this] { return stopped_reason_.has_value(); });
}

}  // namespace forkvm::vmm
