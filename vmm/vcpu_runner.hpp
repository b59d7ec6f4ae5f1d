#pragma once
// The run loop of one vCPU on its own thread, as an explicit state machine:
//
//   Running --pause()--> Paused --resume()--> Running
//      |                   |  ^
//      |              park()  | start()
//      |                   v  |
//      |              Paused, no thread (a VM process may fork now)
//      |                   |
//      +---request_stop()--+--> Stopped (thread exits)
//
// A runner made with start_paused (a restored or forked vCPU) begins Paused
// with no thread: start() makes the thread, which waits for resume().
//
// Pausing and stopping set kvm_run.immediate_exit and kick the thread with a
// signal, so KVM_RUN returns EINTR. A pause is taken only on that EINTR,
// i.e. after KVM_RUN was re-entered once: the exit being handled when the
// pause came (say an IN whose data KVM has not yet copied to RAX) is
// complete, and the vCPU state is consistent for a snapshot.
//
// One round of KVM_RUN yields Handled (exit dispatched to a bus, keep going),
// Interrupted (EINTR: look at requests), or Stopped (the guest ended, or a
// KVM error: the reason is reported through on_stop).

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "vmm/bus.hpp"
#include "vmm/kvm.hpp"

namespace forkvm::vmm {

enum class VcpuState { Created, Running, Paused, Stopped };

class VcpuRunner {
public:
    // on_stop(reason, clean): the guest or KVM ended this vCPU. `clean` is
    // true for a guest-requested shutdown/reboot.
    using StopCallback = std::function<void(const std::string& reason, bool clean)>;

    VcpuRunner(Vcpu vcpu, const Bus& pio, const Bus& mmio, StopCallback on_stop, bool start_paused = false);
    ~VcpuRunner();
    VcpuRunner(const VcpuRunner&) = delete;
    VcpuRunner& operator=(const VcpuRunner&) = delete;

    void start();
    // Blocks until the vCPU is paused at a clean point (or has stopped).
    void pause();
    void resume();
    // From Paused: ends the thread (joined on return) and stays Paused, so
    // the process can fork() with no vCPU thread alive. start() makes a new
    // thread, still paused until resume().
    void park();
    // Asks the thread to stop; safe from any thread, including this vCPU's own.
    void request_stop();
    // request_stop() + wait for the thread to exit. Not from this vCPU's thread.
    void stop_and_join();

    [[nodiscard]] VcpuState state() const;
    // Exits this vCPU brought to the VMM for a device (port I/O, MMIO): the
    // cost the agent channel's benchmark counts (docs/benchmarks.md).
    [[nodiscard]] std::uint64_t io_exits() const noexcept {
        return io_exits_.load(std::memory_order_relaxed);
    }
    [[nodiscard]] std::uint64_t mmio_exits() const noexcept {
        return mmio_exits_.load(std::memory_order_relaxed);
    }
    [[nodiscard]] const Vcpu& vcpu() const noexcept { return vcpu_; }

    // Installs the (no-op) kick signal handler. Called once per process
    // before any vCPU thread starts.
    static void install_kick_handler();

private:
    enum class Request { None, Pause, Park, Stop };
    enum class Round { Handled, Interrupted, Stopped };

    void thread_main();
    // Waits in Paused until a request other than Pause; returns it.
    Request wait_while_paused(std::unique_lock<std::mutex>& lock);
    Round run_once();
    void kick();  // with mu_ held
    void finish(const std::string& reason, bool clean);
    // The vCPU's key registers, for a failure report.
    [[nodiscard]] std::string register_summary() const;

    Vcpu vcpu_;
    const Bus& pio_;
    const Bus& mmio_;
    StopCallback on_stop_;

    mutable std::mutex mu_;
    std::condition_variable cv_;
    VcpuState state_ = VcpuState::Created;
    Request request_ = Request::None;
    std::thread thread_;
    pthread_t handle_{};
    bool thread_started_ = false;
    std::atomic<std::uint64_t> io_exits_{0};
    std::atomic<std::uint64_t> mmio_exits_{0};
};

}  // namespace forkvm::vmm
