#include "vmm/vcpu_runner.hpp"

#include <signal.h>

#include <atomic>
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "vmm/seccomp_filter.hpp"

namespace forkvm::vmm {
namespace {

// SIGUSR1 is reserved in VM processes for kicking vCPU threads out of KVM_RUN.
constexpr int kKickSignal = SIGUSR1;

void on_kick(int /*signo*/) {}

void set_immediate_exit(kvm_run& run, bool value) {
    std::atomic_ref<std::uint8_t>(run.immediate_exit).store(value ? 1 : 0, std::memory_order_seq_cst);
}

}  // namespace

std::string VcpuRunner::register_summary() const {
    try {
        kvm_regs r = vcpu_.get_regs();
        kvm_sregs s = vcpu_.get_sregs();
        return fmt::format(
            "rip={:#x} rsp={:#x} rflags={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}", r.rip,
            r.rsp, r.rflags, s.cr0, s.cr2, s.cr3, s.cr4, s.efer);
    } catch (const std::exception& e) {
        return std::string("registers unavailable: ") + e.what();
    }
}

void VcpuRunner::install_kick_handler() {
    struct sigaction sa {};
    sa.sa_handler = on_kick;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;  // no SA_RESTART: KVM_RUN must return EINTR
    ::sigaction(kKickSignal, &sa, nullptr);
}

VcpuRunner::VcpuRunner(Vcpu vcpu, const Bus& pio, const Bus& mmio, StopCallback on_stop, bool start_paused)
    : vcpu_(std::move(vcpu)), pio_(pio), mmio_(mmio), on_stop_(std::move(on_stop)) {
    if (start_paused) {
        state_ = VcpuState::Paused;
        request_ = Request::Pause;
    }
}

VcpuRunner::~VcpuRunner() {
    if (thread_.joinable()) stop_and_join();
}

void VcpuRunner::start() {
    std::lock_guard lock(mu_);
    if (thread_started_ || state_ == VcpuState::Stopped) return;
    thread_started_ = true;
    if (state_ == VcpuState::Created) state_ = VcpuState::Running;
    thread_ = std::thread([this] { thread_main(); });
    handle_ = thread_.native_handle();
}

void VcpuRunner::kick() {
    set_immediate_exit(vcpu_.run_state(), true);
    if (thread_started_ && state_ == VcpuState::Running) ::pthread_kill(handle_, kKickSignal);
}

void VcpuRunner::pause() {
    std::unique_lock lock(mu_);
    if (state_ != VcpuState::Running) return;
    request_ = Request::Pause;
    kick();
    cv_.wait(lock, [this] { return state_ == VcpuState::Paused || state_ == VcpuState::Stopped; });
}

void VcpuRunner::resume() {
    std::lock_guard lock(mu_);
    if (request_ == Request::Pause) request_ = Request::None;
    cv_.notify_all();
}

void VcpuRunner::park() {
    {
        std::lock_guard lock(mu_);
        if (state_ != VcpuState::Paused || !thread_started_) return;
        request_ = Request::Park;
        cv_.notify_all();
    }
    if (thread_.joinable()) thread_.join();
    std::lock_guard lock(mu_);
    thread_started_ = false;
    if (request_ == Request::Park) request_ = Request::Pause;
}

void VcpuRunner::request_stop() {
    std::lock_guard lock(mu_);
    request_ = Request::Stop;
    if (thread_started_ && state_ != VcpuState::Stopped) kick();
    cv_.notify_all();
}

void VcpuRunner::stop_and_join() {
    request_stop();
    if (thread_.joinable()) thread_.join();
    std::lock_guard lock(mu_);
    state_ = VcpuState::Stopped;
}

VcpuState VcpuRunner::state() const {
    std::lock_guard lock(mu_);
    return state_;
}

void VcpuRunner::finish(const std::string& reason, bool clean) {
    {
        std::lock_guard lock(mu_);
        state_ = VcpuState::Stopped;
        cv_.notify_all();
    }
    if (on_stop_) on_stop_(reason, clean);
}

VcpuRunner::Request VcpuRunner::wait_while_paused(std::unique_lock<std::mutex>& lock) {
    state_ = VcpuState::Paused;
    cv_.notify_all();
    cv_.wait(lock, [this] { return request_ != Request::Pause; });
    return request_;
}

void VcpuRunner::thread_main() {
    apply_vcpu_thread_seccomp();  // narrower than the control thread's filter we inherit
    {
        // A thread started on a paused vCPU (restored, forked or unparked)
        // waits for resume() before its first KVM_RUN.
        std::unique_lock lock(mu_);
        if (state_ == VcpuState::Paused) {
            Request r = wait_while_paused(lock);
            if (r == Request::Park) return;  // still Paused; park() joins us
            if (r == Request::Stop) {
                lock.unlock();
                finish("stopped by the host", true);
                return;
            }
            state_ = VcpuState::Running;
        }
    }
    for (;;) {
        {
            std::lock_guard lock(mu_);
            if (request_ == Request::Stop) break;
        }
        switch (run_once()) {
            case Round::Handled: continue;
            case Round::Stopped: return;  // finish() already ran
            case Round::Interrupted: break;
        }
        std::unique_lock lock(mu_);
        if (request_ == Request::Pause) {
            // KVM_RUN was re-entered with immediate_exit set: every exit is
            // complete and the vCPU's registers are consistent.
            set_immediate_exit(vcpu_.run_state(), false);
            Request r = wait_while_paused(lock);
            if (r == Request::Park) return;  // still Paused; park() joins us
            if (r == Request::Stop) break;
            state_ = VcpuState::Running;
        }
        if (request_ == Request::Stop) break;
        set_immediate_exit(vcpu_.run_state(), false);
    }
    finish("stopped by the host", true);
}

VcpuRunner::Round VcpuRunner::run_once() {
    int err = vcpu_.run();
    if (err == EINTR || err == EAGAIN) return Round::Interrupted;
    if (err != 0) {
        finish(fmt::format("KVM_RUN failed on vCPU {}: errno {}", vcpu_.id(), err), false);
        return Round::Stopped;
    }
    kvm_run& run = vcpu_.run_state();
    switch (run.exit_reason) {
        case KVM_EXIT_IO: {
            io_exits_.fetch_add(1, std::memory_order_relaxed);
            std::uint8_t* data = vcpu_.io_data();
            const std::size_t size = run.io.size;
            for (std::uint32_t i = 0; i < run.io.count; ++i) {
                std::span<std::uint8_t> bytes(data + i * size, size);
                if (run.io.direction == KVM_EXIT_IO_OUT) {
                    pio_.write(run.io.port, bytes);
                } else {
                    pio_.read(run.io.port, bytes);
                }
            }
            return Round::Handled;
        }
        case KVM_EXIT_MMIO: {
            mmio_exits_.fetch_add(1, std::memory_order_relaxed);
            std::span<std::uint8_t> bytes(run.mmio.data,
                                          std::min<std::size_t>(run.mmio.len, sizeof run.mmio.data));
            if (run.mmio.is_write) {
                mmio_.write(run.mmio.phys_addr, bytes);
            } else {
                mmio_.read(run.mmio.phys_addr, bytes);
            }
            return Round::Handled;
        }
        case KVM_EXIT_INTR: return Round::Interrupted;
        case KVM_EXIT_HLT: finish("guest halted (HLT with interrupts off)", true); return Round::Stopped;
        case KVM_EXIT_SHUTDOWN:
            finish("guest triple fault (KVM_EXIT_SHUTDOWN)", false);
            return Round::Stopped;
        case KVM_EXIT_SYSTEM_EVENT: {
            const auto type = run.system_event.type;
            if (type == KVM_SYSTEM_EVENT_SHUTDOWN || type == KVM_SYSTEM_EVENT_RESET) {
                finish(type == KVM_SYSTEM_EVENT_SHUTDOWN ? "guest powered off" : "guest reset", true);
            } else {
                finish(fmt::format("guest system event {} (crash)", type), false);
            }
            return Round::Stopped;
        }
        case KVM_EXIT_INTERNAL_ERROR:
            finish(fmt::format("KVM internal error, suberror {}", run.internal.suberror), false);
            return Round::Stopped;
        case KVM_EXIT_FAIL_ENTRY:
            finish(fmt::format("KVM entry failed, hardware reason {:#x}",
                               static_cast<std::uint64_t>(run.fail_entry.hardware_entry_failure_reason)),
                   false);
            return Round::Stopped;
        default:
            finish(
                fmt::format("unexpected VM exit {} ({})", exit_reason_name(run.exit_reason), run.exit_reason),
                false);
            return Round::Stopped;
    }
}

}  // namespace forkvm::vmm
