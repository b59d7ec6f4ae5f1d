#include "vmm/vm_process_main.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <ctime>
#include <exception>
#include <memory>
#include <spdlog/spdlog.h>
#include <string>
#include <vector>

#include "snapshot/snapshot_error.hpp"
#include "vmm/console_log.hpp"
#include "vmm/control_protocol.hpp"
#include "vmm/jail.hpp"
#include "vmm/jail_probe.hpp"
#include "vmm/machine.hpp"
#include "vmm/mailbox.hpp"
#include "vmm/seccomp_filter.hpp"
#include "vmm/sibling_fork.hpp"
#include "vmm/snapshot_io.hpp"
#include "vmm/sys_error.hpp"

namespace forkvm::vmm {
namespace {

constexpr std::size_t kAgentOutBuffer = 64 * 1024;

void set_nonblocking(int fd) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

class ProcessLoop {
public:
    explicit ProcessLoop(const VmProcessArgs& args) : args_(args) {}
    int run();

private:
    bool start_machine();
    // The jail and the control thread's seccomp filter: after the machine is
    // built, before the guest runs.
    void lock_down();
    void setup_epoll();
    [[nodiscard]] bool agent_channel_idle() const;
    bool pause_if_idle(bool& was_running);
    // Posts entropy, clock and identity (all of clone hygiene) in the
    // mailbox; the VM must be paused.
    void post_identity(const std::string& hostname);
    void resume_machine(const std::string& hostname = {});  // posts the clock (and hostname), then resumes
    void take_snapshot(const nlohmann::json& msg, std::vector<UniqueFd>& fds);
    void fork_vm(const nlohmann::json& msg, std::vector<UniqueFd>& fds);
    void become_fork_child(std::vector<UniqueFd>& fds, const snapshot::StateFile& state,
                           const std::string& hostname, bool paused);
    void pump_console();
    void pump_agent_in();
    void pump_agent_out();
    void update_agent_interest();
    void report_stop_if_needed();
    [[nodiscard]] int watchdog_wait_ms() const;
    void run_irq_watchdog();
    // Returns false when the loop should end.
    bool handle_control(const nlohmann::json& msg, std::vector<UniqueFd>& fds);
    void reply(const nlohmann::json& msg, nlohmann::json body);

    VmProcessArgs args_;
    std::unique_ptr<Machine> machine_;
    ConsoleLog console_;
    std::vector<std::uint8_t> agent_out_;  // guest → host bytes not yet written to agent_fd
    bool agent_open_ = true;
    bool stop_reported_ = false;
    int epoll_ = -1;
    static constexpr std::uint32_t kAgentRemoved = ~0U;  // the agent socket is out of the epoll set
    std::uint32_t agent_events_ = 0;
    std::chrono::steady_clock::time_point next_watchdog_{};
    // Set in a fork's child: the epoll events in hand belong to the parent.
    bool events_stale_ = false;
};

std::string default_hostname() { return "vm-" + std::to_string(::getpid()); }

// A hostname from a request, or the default; "" when invalid.
std::string requested_hostname(const nlohmann::json& msg) {
    if (!msg.contains("hostname")) return default_hostname();
    if (!msg["hostname"].is_string()) return "";
    std::string name = msg["hostname"].get<std::string>();
    return proto::valid_mailbox_hostname(name) ? name : "";
}

bool requested_paused(const nlohmann::json& msg) {
    return msg.contains("paused") && msg["paused"].is_boolean() && msg["paused"].get<bool>();
}

constexpr auto kIrqWatchdogPeriod = std::chrono::milliseconds(100);

// How long the loop may sleep: until the next lost-interrupt check while the
// guest runs, a second otherwise (a paused or stopped VM raises no IRQs).
int ProcessLoop::watchdog_wait_ms() const {
    if (machine_->paused() || machine_->stop_info()) return 1000;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(next_watchdog_ -
                                                                      std::chrono::steady_clock::now());
    return static_cast<int>(std::clamp<std::int64_t>(left.count(), 0, kIrqWatchdogPeriod.count()));
}

// See Serial::retrigger_stalled_irq. Measured in the emulated KVM host
// (nested SVM under QEMU TCG): without it, a bulk guest→host transfer stalled
// in about one run out of three with the agent UART's IRQ line high, THRE
// pending and the guest never reading IIR again.
void ProcessLoop::run_irq_watchdog() {
    auto now = std::chrono::steady_clock::now();
    if (now < next_watchdog_ || machine_->paused() || machine_->stop_info()) return;
    next_watchdog_ = now + kIrqWatchdogPeriod;
    machine_->console().retrigger_stalled_irq();
    machine_->agent().retrigger_stalled_irq();
}

void ProcessLoop::reply(const nlohmann::json& msg, nlohmann::json body) {
    if (msg.contains("id")) body["id"] = msg["id"];
    control::send_message(args_.control_fd, body);
}

// The first message makes the machine: "boot" a kernel or "restore" a
// snapshot directory.
bool ProcessLoop::start_machine() {
    auto msg = control::recv_message(args_.control_fd);
    if (!msg) return false;
    const std::string op = msg->value("op", "");
    try {
        if (op == "boot" && msg->contains("config")) {
            machine_ = Machine::boot(control::config_from_json((*msg)["config"]));
            lock_down();
            machine_->start();
        } else if (op == "restore" && msg->contains("dir") && (*msg)["dir"].is_string()) {
            const std::string hostname = requested_hostname(*msg);
            if (hostname.empty()) throw std::invalid_argument("hostname: not a valid hostname");
            LoadedSnapshot loaded = load_snapshot((*msg)["dir"].get<std::string>());
            machine_ = Machine::restore(std::move(loaded.memory), loaded.state);
            lock_down();
            post_identity(hostname);
            if (!requested_paused(*msg)) machine_->resume();
        } else {
            reply(*msg, {{"ok", false}, {"error", "expected a boot or restore request"}});
            return false;
        }
    } catch (const snapshot::SnapshotError& e) {
        reply(*msg, {{"ok", false}, {"error", e.what()}, {"snapshot_error", snapshot::kind_name(e.kind())}});
        return false;
    } catch (const std::exception& e) {
        reply(*msg, {{"ok", false}, {"error", e.what()}});
        return false;
    }
    reply(*msg, {{"ok", true}, {"pid", ::getpid()}});
    return true;
}

// Room for a snapshot of this VM (memory.bin is the largest file) and its
// state; RLIMIT_FSIZE stops anything larger.
constexpr std::uint64_t kSnapshotFileSlack = 64ULL << 20;

void ProcessLoop::lock_down() {
    // Log lines carry local time: load the zone now, while /etc/localtime
    // can still be read (glibc keeps it; no later call reopens the file).
    ::tzset();
    if (args_.jail_uid != 0) {
        enter_jail({.uid = args_.jail_uid, .max_file_bytes = machine_->memory().size() + kSnapshotFileSlack});
        // Changing uids cleared the death signal: arm it again, and make
        // sure the controller did not go in between.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (args_.parent_pid != 0 && ::getppid() != args_.parent_pid)
            throw std::runtime_error("controller gone");
    }
    set_seccomp_report_fd(args_.control_fd);
    install_seccomp(ThreadRole::control, args_.seccomp);
    set_vcpu_thread_seccomp(args_.seccomp);
}

void ProcessLoop::post_identity(const std::string& hostname) {
    proto::MailboxUpdate update;
    update.flags = proto::kMailboxEntropy | proto::kMailboxClock | proto::kMailboxHostname;
    update.hostname = hostname;
    post_mailbox(machine_->memory(), update);
}

void ProcessLoop::resume_machine(const std::string& hostname) {
    if (!machine_->paused() || machine_->stop_info()) return;
    proto::MailboxUpdate update;
    update.flags = proto::kMailboxClock;
    if (!hostname.empty()) {
        update.flags |= proto::kMailboxHostname;
        update.hostname = hostname;
    }
    post_mailbox(machine_->memory(), update);
    machine_->resume();
}

// Pauses the VM, then checks that the agent channel is idle: checked
// before the pause, a guest write in between would be saved (and replayed
// to a clone) mid-frame. When busy, the VM runs on as it was and the caller
// answers "busy" (the host retries).
bool ProcessLoop::pause_if_idle(bool& was_running) {
    was_running = !machine_->paused();
    machine_->pause();
    if (agent_channel_idle()) return true;
    if (was_running) resume_machine();
    return false;
}

bool ProcessLoop::agent_channel_idle() const {
    return agent_out_.empty() && machine_->agent().input_pending() == 0 &&
           machine_->agent().output_pending() == 0;
}

// The controller passes the snapshot directory as an fd: a jailed process
// has no path to it. We write into it as our working directory.
void ProcessLoop::take_snapshot(const nlohmann::json& msg, std::vector<UniqueFd>& fds) {
    if (!msg.contains("dir") || !msg["dir"].is_string() || fds.size() != 1) {
        reply(msg, {{"ok", false}, {"error", "snapshot needs dir (a string) and the directory's fd"}});
        return;
    }
    bool was_running = false;
    if (!pause_if_idle(was_running)) {
        reply(msg, {{"ok", false}, {"error", "agent channel busy: a snapshot needs it idle"}});
        return;
    }
    nlohmann::json body;
    try {
        if (::fchdir(fds[0].get()) != 0) throw SysError("fchdir to the snapshot directory", errno);
        auto manifest = write_snapshot(*machine_, ".", FORKVM_VERSION);
        body = {{"ok", true}, {"memory_size", manifest.memory_size}, {"state_size", manifest.state_size}};
    } catch (const std::exception& e) {
        body = {{"ok", false}, {"error", msg["dir"].get<std::string>() + ": " + e.what()}};
    }
    (void)!::chdir("/");
    fds.clear();
    if (was_running) resume_machine();
    reply(msg, body);
}

// Fork: the VM pauses, its vCPU threads end (the process is then
// single-threaded), its state is captured, and the process clones itself
// (vmm/sibling_fork.hpp). The child builds a new KVM VM over the memory it
// shares copy-on-write with us, loads the captured state (the same path as a
// restore from disk), posts clone hygiene and answers on its own sockets,
// which the controller passed along with the request.
void ProcessLoop::fork_vm(const nlohmann::json& msg, std::vector<UniqueFd>& fds) {
    const std::string hostname = requested_hostname(msg);
    if (fds.size() != 2) {
        reply(msg, {{"ok", false}, {"error", "fork needs two fds: the child's control and agent sockets"}});
        return;
    }
    if (hostname.empty()) {
        reply(msg, {{"ok", false}, {"error", "hostname: not a valid hostname"}});
        return;
    }
    if (machine_->stop_info()) {
        reply(msg, {{"ok", false}, {"error", "the VM has stopped"}});
        return;
    }
    bool was_running = false;
    if (!pause_if_idle(was_running)) {
        reply(msg, {{"ok", false}, {"error", "agent channel busy: a fork needs it idle"}});
        return;
    }
    nlohmann::json body;
    try {
        machine_->park();
        snapshot::StateFile state;
        machine_->save_state(state);
        pid_t pid = fork_as_sibling();
        if (pid == 0) {
            become_fork_child(fds, state, hostname, requested_paused(msg));
            return;
        }
        if (pid < 0) throw SysError("clone", errno);
        body = {{"ok", true}, {"pid", pid}};
    } catch (const std::exception& e) {
        body = {{"ok", false}, {"error", e.what()}};
    }
    fds.clear();  // the child holds its ends now
    if (was_running) resume_machine();
    reply(msg, body);
}

void ProcessLoop::become_fork_child(std::vector<UniqueFd>& fds, const snapshot::StateFile& state,
                                    const std::string& hostname, bool paused) {
    // Die with the controller, like every VM process: the death signal is
    // cleared by fork, and the controller may already be gone.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (args_.parent_pid != 0 && ::getppid() != args_.parent_pid) ::_exit(1);
    // The parent's sockets, epoll and console are not ours: close our copies
    // (the parent's stay open) and speak on the sockets made for us.
    ::close(epoll_);
    ::close(args_.control_fd);
    ::close(args_.agent_fd);
    if (args_.console_fd >= 0) ::close(args_.console_fd);
    args_.console_fd = -1;
    args_.control_fd = fds[0].release();
    args_.agent_fd = fds[1].release();
    fds.clear();
    set_seccomp_report_fd(args_.control_fd);
    agent_out_.clear();
    agent_open_ = true;
    stop_reported_ = false;
    events_stale_ = true;
    // Wait until the controller has moved us into a cgroup of our own: what
    // the new VM creates from here on (its memory, KVM's per-VM kernel
    // thread, which joins our cgroup when the VM is made) belongs there,
    // not to the process we were forked from.
    auto go = control::recv_message(args_.control_fd);
    if (!go || go->value("op", "") != "start") ::_exit(1);
    try {
        auto inherited = Machine::release_in_fork_child(std::move(machine_));
        machine_ = Machine::restore(std::move(inherited.memory), state, std::move(inherited.kvm));
        post_identity(hostname);
        if (!paused) machine_->resume();
    } catch (const std::exception& e) {
        control::send_message(args_.control_fd, {{"event", "forked"}, {"ok", false}, {"error", e.what()}});
        ::_exit(1);
    }
    setup_epoll();
    control::send_message(args_.control_fd, {{"event", "forked"}, {"ok", true}, {"pid", ::getpid()}});
}

void ProcessLoop::pump_console() {
    std::array<std::uint8_t, 4096> buf{};
    for (;;) {
        std::size_t n = machine_->console().pop_output(buf);
        if (n == 0) break;
        std::span<const std::uint8_t> bytes(buf.data(), n);
        console_.append(bytes);
        if (args_.console_fd >= 0) {
            // Best effort: a slow reader of the live console loses bytes; the
            // tail in console_ is complete.
            (void)!::write(args_.console_fd, bytes.data(), bytes.size());
        }
    }
}

void ProcessLoop::pump_agent_in() {
    if (!agent_open_) return;
    std::array<std::uint8_t, 16384> buf{};
    for (;;) {
        std::size_t room = machine_->agent().input_room();
        if (room == 0) break;
        ssize_t n = ::read(args_.agent_fd, buf.data(), std::min(room, buf.size()));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;  // EAGAIN (or an error: the next read tells)
        if (n == 0) {
            agent_open_ = false;  // the controller closed the agent channel
            break;
        }
        machine_->agent().push_input(std::span<const std::uint8_t>(buf.data(), static_cast<std::size_t>(n)));
    }
}

void ProcessLoop::pump_agent_out() {
    std::array<std::uint8_t, 4096> chunk{};
    for (;;) {
        // Grows only as far as the socket lags behind the guest, so an idle
        // VM process keeps no large buffer.
        while (agent_out_.size() < kAgentOutBuffer) {
            std::size_t n = machine_->agent().pop_output(chunk);
            if (n == 0) break;
            agent_out_.insert(agent_out_.end(), chunk.begin(),
                              chunk.begin() + static_cast<std::ptrdiff_t>(n));
        }
        if (agent_out_.empty()) return;
        if (!agent_open_) {
            agent_out_.clear();  // nobody listens: discard so the guest is not stalled
            continue;
        }
        ssize_t n = ::write(args_.agent_fd, agent_out_.data(), agent_out_.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;  // EPOLLOUT brings us back
        if (n <= 0) {
            agent_open_ = false;
            agent_out_.clear();
            return;
        }
        agent_out_.erase(agent_out_.begin(), agent_out_.begin() + n);
    }
}

void ProcessLoop::update_agent_interest() {
    if (!agent_open_) {
        // A closed socket reports EPOLLHUP whatever the interest: take it
        // out of the set, or every epoll_wait would return at once.
        if (agent_events_ != kAgentRemoved) {
            ::epoll_ctl(epoll_, EPOLL_CTL_DEL, args_.agent_fd, nullptr);
            agent_events_ = kAgentRemoved;
        }
        return;
    }
    std::uint32_t want = 0;
    if (machine_->agent().input_room() > 0) want |= EPOLLIN;
    if (!agent_out_.empty()) want |= EPOLLOUT;
    if (want == agent_events_) return;
    epoll_event ev{};
    ev.events = want;
    ev.data.fd = args_.agent_fd;
    ::epoll_ctl(epoll_, EPOLL_CTL_MOD, args_.agent_fd, &ev);
    agent_events_ = want;
}

void ProcessLoop::report_stop_if_needed() {
    if (stop_reported_) return;
    auto info = machine_->stop_info();
    if (!info) return;
    stop_reported_ = true;
    control::send_message(args_.control_fd,
                          {{"event", "stopped"}, {"reason", info->reason}, {"clean", info->clean}});
}

bool ProcessLoop::handle_control(const nlohmann::json& msg, std::vector<UniqueFd>& fds) {
    const std::string op = msg.value("op", "");
    if (op == "pause") {
        machine_->pause();
        reply(msg, {{"ok", true}});
    } else if (op == "resume") {
        try {
            std::string hostname;
            if (msg.contains("hostname")) {
                hostname = requested_hostname(msg);
                if (hostname.empty()) throw std::invalid_argument("hostname: not a valid hostname");
            }
            resume_machine(hostname);
            reply(msg, {{"ok", true}});
        } catch (const std::exception& e) {
            reply(msg, {{"ok", false}, {"error", e.what()}});
        }
    } else if (op == "snapshot") {
        take_snapshot(msg, fds);
    } else if (op == "probe") {
        // Test hook (docs/security.md): one forbidden action from inside the
        // jail. Only the controller can ask; the call can do no more than
        // the jail allows, and a forbidden one ends this process.
        try {
            reply(msg, {{"ok", true}, {"result", run_jail_probe(msg.value("probe", ""))}});
        } catch (const std::exception& e) {
            reply(msg, {{"ok", false}, {"error", e.what()}});
        }
    } else if (op == "fork") {
        fork_vm(msg, fds);
    } else if (op == "status") {
        auto info = machine_->stop_info();
        std::string state = info ? "stopped" : machine_->paused() ? "paused" : "running";
        nlohmann::json body{
            {"ok", true},
            {"state", state},
            {"unhandled_io", machine_->unhandled_io()},
            {"console_bytes", console_.total_bytes()},
            {"agent_dropped_bytes", machine_->agent().dropped_output()},
            {"agent_device", machine_->agent().describe()},
            {"io_exits", machine_->device_exits().io},
            {"mmio_exits", machine_->device_exits().mmio},
            {"irq_retriggers", machine_->agent().irq_retriggers() + machine_->console().irq_retriggers()}};
        if (info) {
            body["reason"] = info->reason;
            body["clean"] = info->clean;
        }
        reply(msg, body);
    } else if (op == "console") {
        std::size_t max = 64 * 1024;
        if (msg.contains("max_bytes") && msg["max_bytes"].is_number_unsigned())
            max = std::min<std::size_t>(msg["max_bytes"].get<std::size_t>(), 128 * 1024);
        pump_console();
        std::string tail = console_.tail(max);
        // JSON strings must be UTF-8: invalid bytes become U+FFFD on dump.
        reply(msg, {{"ok", true}, {"console", tail}});
    } else if (op == "stop") {
        machine_->stop("stopped by the host");
        reply(msg, {{"ok", true}});
        return false;
    } else {
        reply(msg, {{"ok", false}, {"error", "unknown op '" + op + "'"}});
    }
    return true;
}

void ProcessLoop::setup_epoll() {
    set_nonblocking(args_.agent_fd);
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) throw SysError("epoll_create1", errno);
    auto add = [&](int fd) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        if (::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev) != 0) throw SysError("epoll_ctl", errno);
    };
    add(args_.control_fd);
    add(machine_->event_fd());
    add(args_.agent_fd);
    agent_events_ = EPOLLIN;
}

int ProcessLoop::run() {
    // Die with the controller. PR_SET_PDEATHSIG fires when the thread that
    // spawned us exits; the control socket's EOF covers the rest.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (args_.parent_pid != 0 && ::getppid() != args_.parent_pid) return 1;
    ::signal(SIGPIPE, SIG_IGN);

    if (!start_machine()) return 1;
    if (args_.console_fd >= 0) set_nonblocking(args_.console_fd);
    setup_epoll();

    bool running = true;
    while (running) {
        std::array<epoll_event, 8> events{};
        int n = ::epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), watchdog_wait_ms());
        if (n < 0 && errno != EINTR) break;
        events_stale_ = false;
        for (int i = 0; i < n && running && !events_stale_; ++i) {
            const int fd = events[static_cast<std::size_t>(i)].data.fd;
            if (fd == args_.control_fd) {
                std::vector<UniqueFd> fds;
                auto msg = control::recv_message(args_.control_fd, &fds);
                if (!msg) {
                    running = false;  // the controller is gone
                } else if (!msg->contains("invalid")) {
                    running = handle_control(*msg, fds);
                }
            } else if (fd == machine_->event_fd()) {
                machine_->clear_event();
            }
        }
        // Whatever woke us, move every byte that can move.
        pump_console();
        pump_agent_out();
        pump_agent_in();
        update_agent_interest();
        report_stop_if_needed();
        run_irq_watchdog();
    }
    machine_->stop("controller gone");
    pump_console();
    ::close(epoll_);
    return 0;
}

}  // namespace

int run_vm_process(const VmProcessArgs& args) {
    // glibc sizes its malloc arena limit from the CPU count the first time a
    // second thread allocates, by opening /sys/devices/system/cpu/online:
    // on a vCPU thread, under its seccomp filter, in an empty root. A fixed
    // limit skips that (a VM process has one control thread and a few vCPU
    // threads that seldom allocate).
    ::mallopt(M_ARENA_MAX, 2);
    try {
        if (args.kvm_fd >= 0) {
            ::fcntl(args.kvm_fd, F_SETFD, FD_CLOEXEC);
            Kvm::use_device(UniqueFd(args.kvm_fd));
            (void)Kvm::open();  // anything but a KVM device fails here, clearly
        }
        ProcessLoop p(args);
        return p.run();
    } catch (const std::exception& e) {
        spdlog::error("VM process: {}", e.what());
        return 1;
    }
}

}  // namespace forkvm::vmm
