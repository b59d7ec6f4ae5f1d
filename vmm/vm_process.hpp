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
#include <span>
#include <stdexcept>
#include <string>
#include <thread>

#include "vmm/cgroup.hpp"
#include "vmm/seccomp_filter.hpp"
#include "vmm/unique_fd.hpp"
#include "vmm/vm_config.hpp"

namespace forkvm::vmm {

class VmProcessError : public std::runtime_error {
public:
    explicit VmProcessError(const std::string& message, std::string snapshot_error = "")
        : std::runtime_error(message), snapshot_error_(std::move(snapshot_error)) {}
    // For a refused snapshot: the snapshot::SnapshotErrorKind's name
    // ("truncated", "corrupt", "incompatible", ...); else empty.
    [[nodiscard]] const std::string& snapshot_error() const noexcept { return snapshot_error_; }

private:
    std::string snapshot_error_;
};

// How VM processes are confined (vmm/jail.hpp, vmm/seccomp_filter.hpp).
struct JailOptions {
    bool enabled = false;  // namespaces, an empty root, a uid of its own
    // Each spawned VM process gets a free uid (= gid) from
    // [uid_base, uid_base + uid_count); its fork children share it.
    uid_t uid_base = 0;
    std::uint32_t uid_count = 0;
    SeccompMode seccomp = SeccompMode::off;
};

// Per-VM cgroup limits (vmm/cgroup.hpp); each VM process, forks included,
// gets a cgroup of its own.
struct ResourceLimits {
    std::shared_ptr<const CgroupHost> cgroups;  // null: no cgroups
    std::uint64_t memory_overhead = 0;          // memory limit = guest memory + this
    std::uint64_t memory_max = 0;               // non-zero: the memory limit exactly
    std::uint32_t pids_max = 0;                 // tasks (threads count); 0 = none
    std::uint32_t cpu_quota_percent = 0;        // of one CPU; 0 = fair share only
};

struct SpawnOptions {
    std::string forkvm_binary;  // the `forkvm` executable to run as `forkvm vmm`
    int console_fd = -1;        // if >= 0, the VM process copies the console here
    // If >= 0, an open /dev/kvm the VM process uses instead of opening the
    // node (a server running as server.user may not open it; docs/security.md).
    int kvm_device_fd = -1;
    std::chrono::milliseconds boot_timeout{60000};
    JailOptions jail;
    ResourceLimits limits;
};

// How a restored or forked VM starts.
struct CloneOptions {
    std::string hostname;  // the clone's identity in the guest; "" = "vm-<pid>"
    bool paused = false;   // keep it paused (a warm pool's spare) until resume()
};

struct VmStatus {
    std::string state;   // "running", "paused", "stopped", "exited"
    std::string reason;  // why it stopped, if it did
    std::uint64_t unhandled_io = 0;
    std::uint64_t agent_dropped_bytes = 0;  // guest wrote while told the UART was busy
    std::uint64_t io_exits = 0;             // device exits (KVM_EXIT_IO) since the VM was built
    std::uint64_t mmio_exits = 0;           // device exits (KVM_EXIT_MMIO)
    std::string agent_device;               // the agent channel device's state, for a diagnosis
};

class VmProcess {
public:
    using Clock = std::chrono::steady_clock;

    // Boots `config` in a new VM process.
    static std::unique_ptr<VmProcess> spawn(const VmConfig& config, const SpawnOptions& options);
    // Restores the snapshot directory `dir` in a new VM process, with clone
    // hygiene (fresh entropy, the host's clock, `clone.hostname`) posted
    // before the guest runs. Errors name the snapshot problem.
    static std::unique_ptr<VmProcess> restore(const std::string& dir, const CloneOptions& clone,
                                              const SpawnOptions& options);
    ~VmProcess();
    VmProcess(const VmProcess&) = delete;
    VmProcess& operator=(const VmProcess&) = delete;

    [[nodiscard]] pid_t pid() const noexcept { return pid_; }
    // The uid the VM process runs as in its jail; 0 when it is not jailed.
    [[nodiscard]] uid_t jail_uid() const noexcept { return uid_ ? *uid_ : 0; }
    // The VM process's own cgroup directories (controller -> dir; "" for
    // cgroup v2); empty without cgroups.
    [[nodiscard]] std::map<std::string, std::string> cgroup_dirs() const;
    // The host end of the agent channel (a stream socket); once.
    UniqueFd take_agent_fd() { return std::move(agent_fd_); }

    // Writes a snapshot of this VM to `dir` (pauses it meanwhile; resumes it
    // if it was running). The agent channel must be idle.
    void snapshot(const std::string& dir, Clock::duration timeout = std::chrono::minutes(5));
    // A zero-copy clone: the VM pauses briefly, a new VM process shares its
    // memory copy-on-write and continues from the same state with its own
    // hygiene. The clone is our child (its death signal follows us). The
    // agent channel must be idle. The clone's agent sends no Ready frame: its
    // agent is the same one, mid-session; ping it.
    std::unique_ptr<VmProcess> fork(const CloneOptions& clone,
                                    Clock::duration timeout = std::chrono::seconds(60));

    // Test hook (vmm/jail_probe.hpp): the VM process tries one forbidden
    // action. Returns how the call failed; throws VmProcessError when the
    // process died of it (stopped_reason() says why).
    std::string probe(const std::string& name, Clock::duration timeout = std::chrono::seconds(30));

    void pause(Clock::duration timeout = std::chrono::seconds(10));
    // A non-empty `hostname` is posted with the clock (the agent applies it
    // before its next request): the identity of a VM forked ahead of time.
    void resume(Clock::duration timeout = std::chrono::seconds(10), const std::string& hostname = {});
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
    VmProcess(pid_t pid, UniqueFd control, UniqueFd agent, std::shared_ptr<const uid_t> uid);
    // A `forkvm vmm` process waiting for its first request (boot or restore).
    // `memory_bytes`: the guest's memory size as we know it (its cgroup's
    // memory limit is set from it before the VM is built).
    static std::unique_ptr<VmProcess> spawn_process(const SpawnOptions& options, std::uint64_t memory_bytes);
    nlohmann::json request(nlohmann::json msg, Clock::duration timeout, std::span<const int> fds = {});
    // A fork's child announces itself on its own control socket.
    void wait_forked(Clock::duration timeout);
    // Moves the process into a cgroup of its own, limits set.
    void enter_cgroup(const ResourceLimits& limits, std::uint64_t memory_bytes);
    void reader_main();
    [[nodiscard]] std::string exit_reason_locked() const;
    void reap(bool block);

    pid_t pid_;
    // The jail uid, shared with our fork children: free again once the last
    // process using it is gone.
    std::shared_ptr<const uid_t> uid_;
    UniqueFd control_fd_;
    UniqueFd agent_fd_;
    std::thread reader_;

    mutable std::mutex mu_;
    mutable std::condition_variable cv_;
    std::uint64_t next_id_ = 1;
    std::map<std::uint64_t, std::optional<nlohmann::json>> pending_;
    std::optional<std::string> stopped_reason_;
    std::optional<nlohmann::json> forked_event_;
    ResourceLimits limits_;
    std::uint64_t memory_bytes_ = 0;
    // Destroyed after the process is reaped (members go after the
    // destructor's body), so its directories can be removed.
    std::unique_ptr<VmCgroup> cgroup_;
    bool channel_closed_ = false;
    bool reaped_ = false;
};

}  // namespace forkvm::vmm
