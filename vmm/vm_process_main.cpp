#include "vmm/vm_process_main.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <array>
#include <exception>
#include <memory>
#include <spdlog/spdlog.h>
#include <vector>

#include "vmm/console_log.hpp"
#include "vmm/control_protocol.hpp"
#include "vmm/machine.hpp"

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
    bool boot();
    void pump_console();
    void pump_agent_in();
    void pump_agent_out();
    void update_agent_interest();
    void report_stop_if_needed();
    // Returns false when the loop should end.
    bool handle_control(const nlohmann::json& msg);
    void reply(const nlohmann::json& msg, nlohmann::json body);

    VmProcessArgs args_;
    std::unique_ptr<Machine> machine_;
    ConsoleLog console_;
    std::vector<std::uint8_t> agent_out_;  // guest → host bytes not yet written to agent_fd
    bool agent_open_ = true;
    bool stop_reported_ = false;
    int epoll_ = -1;
    std::uint32_t agent_events_ = 0;
};

void ProcessLoop::reply(const nlohmann::json& msg, nlohmann::json body) {
    if (msg.contains("id")) body["id"] = msg["id"];
    control::send_message(args_.control_fd, body);
}

bool ProcessLoop::boot() {
    auto msg = control::recv_message(args_.control_fd);
    if (!msg) return false;
    if (msg->value("op", "") != "boot" || !msg->contains("config")) {
        reply(*msg, {{"ok", false}, {"error", "expected a boot request"}});
        return false;
    }
    try {
        VmConfig config = control::config_from_json((*msg)["config"]);
        machine_ = Machine::boot(config);
        machine_->start();
    } catch (const std::exception& e) {
        reply(*msg, {{"ok", false}, {"error", e.what()}});
        return false;
    }
    reply(*msg, {{"ok", true}, {"pid", ::getpid()}});
    return true;
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
    for (;;) {
        if (agent_out_.size() < kAgentOutBuffer) {
            std::size_t old = agent_out_.size();
            agent_out_.resize(kAgentOutBuffer);
            std::size_t n = machine_->agent().pop_output(std::span(agent_out_).subspan(old));
            agent_out_.resize(old + n);
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
    std::uint32_t want = 0;
    if (agent_open_) {
        if (machine_->agent().input_room() > 0) want |= EPOLLIN;
        if (!agent_out_.empty()) want |= EPOLLOUT;
    }
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

bool ProcessLoop::handle_control(const nlohmann::json& msg) {
    const std::string op = msg.value("op", "");
    if (op == "pause") {
        machine_->pause();
        reply(msg, {{"ok", true}});
    } else if (op == "resume") {
        machine_->resume();
        reply(msg, {{"ok", true}});
    } else if (op == "status") {
        auto info = machine_->stop_info();
        std::string state = info ? "stopped" : machine_->paused() ? "paused" : "running";
        nlohmann::json body{{"ok", true},
                            {"state", state},
                            {"unhandled_io", machine_->unhandled_io()},
                            {"console_bytes", console_.total_bytes()},
                            {"agent_dropped_bytes", machine_->agent().dropped_output()}};
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

int ProcessLoop::run() {
    // Die with the controller. PR_SET_PDEATHSIG fires when the thread that
    // spawned us exits; the control socket's EOF covers the rest.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (args_.parent_pid != 0 && ::getppid() != args_.parent_pid) return 1;
    ::signal(SIGPIPE, SIG_IGN);

    if (!boot()) return 1;

    set_nonblocking(args_.agent_fd);
    if (args_.console_fd >= 0) set_nonblocking(args_.console_fd);
    epoll_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_ < 0) return 1;
    auto add = [&](int fd, std::uint32_t events) {
        epoll_event ev{};
        ev.events = events;
        ev.data.fd = fd;
        ::epoll_ctl(epoll_, EPOLL_CTL_ADD, fd, &ev);
    };
    add(args_.control_fd, EPOLLIN);
    add(machine_->event_fd(), EPOLLIN);
    add(args_.agent_fd, EPOLLIN);
    agent_events_ = EPOLLIN;

    bool running = true;
    while (running) {
        std::array<epoll_event, 8> events{};
        int n = ::epoll_wait(epoll_, events.data(), static_cast<int>(events.size()), 1000);
        if (n < 0 && errno != EINTR) break;
        for (int i = 0; i < n && running; ++i) {
            const int fd = events[static_cast<std::size_t>(i)].data.fd;
            if (fd == args_.control_fd) {
                auto msg = control::recv_message(args_.control_fd);
                if (!msg) {
                    running = false;  // the controller is gone
                } else if (!msg->contains("invalid")) {
                    running = handle_control(*msg);
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
    }
    machine_->stop("controller gone");
    pump_console();
    ::close(epoll_);
    return 0;
}

}  // namespace

int run_vm_process(const VmProcessArgs& args) {
    try {
        ProcessLoop p(args);
        return p.run();
    } catch (const std::exception& e) {
        spdlog::error("VM process: {}", e.what());
        return 1;
    }
}

}  // namespace forkvm::vmm
