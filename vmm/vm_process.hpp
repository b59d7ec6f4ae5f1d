#pragma once
// VmProcess: the host-side handle of one VM running in its own process.
//
// spawn() starts `forkvm vmm` with posix_spawn (never a bare fork of the
// caller, which may be a multithreaded server), hands it a control socket
// and an agent socket, sends the VM config, and waits until the VM booted.
// The VM process dies with its parent (PR_SET_PDEATHSIG plus the control
// socket's EOF). Destroying the handle kills and reaps the process.

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>

#include "vmm/unique_fd.hpp"
#include "vmm/vm_config.hpp"

namespace forkvm::vmm {

class VmProcessError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct SpawnOptions {
    std::string forkvm_binary;  // the `forkvm` executable to run as `forkvm vmm`
    int console_fd = -1;        // if >= 0, the VM process copies the console here
    std::chrono::milliseconds boot_timeout{60000};
};

struct VmStatus {
    std::string state;   // "running", "paused", "stopped", "exited"
    std::string reason;  // why it stopped, if it did
    std::uint64_t unhandled_io = 0;
    std::uint64_t agent_dropped_bytes = 0;  // guest wrote while told the UART was busy
};

class VmProcess {
public:
    using Clock = std::chrono::steady_clock;

    static std::unique_ptr<VmProcess> spawn(const VmConfig& config, const SpawnOptions& options);
    ~VmProcess();
    VmProcess(const VmProcess&) = delete;
    VmProcess& operator=(const VmProcess&) = delete;

    [[nodiscard]] pid_t pid() const noexcept { return pid_; }
    // The host end of the agent channel (a stream socket); once.
    UniqueFd take_agent_fd() { return std::move(agent_fd_); }

    void pause(Clock::duration timeout = std::chrono::seconds(10));
    void resume(Clock::duration timeout = std::chrono::seconds(10));
    [[nodiscard]] VmStatus status(Clock::duration timeout = std::chrono::seconds(10));
    [[nodiscard]] std::string console_tail(std::size_t max_bytes = 16384,
                                           Clock::duration timeout = std::chrono::seconds(10));
    // Asks the VM to stop, waits up to `timeout` for the process to exit,
    // then SIGKILLs it. Idempotent.
    void stop(Clock::duration timeout = std::chrono::seconds(5));

    // Set once the VM reported that it stopped (guest shutdown, crash...).
    [[nodiscard]] std::optional<std::string> stopped_reason() const;
    // Blocks until the VM stops or the deadline passes.
    bool wait_stopped(Clock::time_point deadline) const;

private:
    VmProcess(pid_t pid, UniqueFd control, UniqueFd agent);
    nlohmann::json request(nlohmann::json msg, Clock::duration timeout);
    void reader_main();
    void reap(bool block);

    pid_t pid_;
    UniqueFd control_fd_;
    UniqueFd agent_fd_;
    std::thread reader_;

    mutable std::mutex mu_;
    mutable std::condition_variable cv_;
    std::uint64_t next_id_ = 1;
    std::map<std::uint64_t, std::optional<nlohmann::json>> pending_;
    std::optional<std::string> stopped_reason_;
    bool channel_closed_ = false;
    bool reaped_ = false;
};

}  // namespace forkvm::vmm
