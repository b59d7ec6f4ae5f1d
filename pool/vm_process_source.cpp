#include "pool/vm_process_source.hpp"

#include <optional>
#include <stdexcept>
#include <utility>

#include "vmm/agent_client.hpp"
#include "vmm/agent_error.hpp"
#include "vmm/agent_ready.hpp"

namespace forkvm::pool {
namespace {

// One VM process and its agent channel. Paused until resume() when it came
// from the pool; running when it came from fork().
class ProcessVm final : public PooledVm {
public:
    ProcessVm(std::string id, std::unique_ptr<vmm::VmProcess> vm, const VmProcessSourceSettings& settings)
        : id_(std::move(id)),
          vm_(std::move(vm)),
          agent_(std::make_unique<vmm::AgentClient>(vm_->take_agent_fd())),
          settings_(settings) {}
    ~ProcessVm() override { destroy(); }

    std::string id() const override { return id_; }

    void resume(const std::string& identity) override {
        vm_->resume(std::chrono::seconds(10), identity);
        vmm::ping_until_answer(*agent_, settings_.agent_ready_within);
    }

    // Cheap: no guest round trip (a paused guest could not answer one).
    bool healthy() override {
        if (!vm_ || vm_->stopped_reason()) return false;
        const auto state = agent_->state();
        return state != vmm::AgentClient::State::broken && state != vmm::AgentClient::State::closed;
    }

    void destroy() noexcept override {
        if (agent_) agent_->close();
        if (vm_) {
            try {
                vm_->stop(std::chrono::seconds(2));
            } catch (...) {  // NOLINT(bugprone-empty-catch): ~VmProcess kills and reaps it anyway
            }
        }
        agent_.reset();
        vm_.reset();
    }

    vmm::AgentClient& agent() override {
        if (!agent_) throw std::logic_error("VM " + id_ + " was destroyed");
        return *agent_;
    }

    std::unique_ptr<PooledVm> fork(const std::string& id) override {
        if (!vm_) throw std::logic_error("VM " + id_ + " was destroyed");
        vmm::CloneOptions options;
        options.hostname = id;
        options.paused = false;
        auto clone = std::make_unique<ProcessVm>(id, vm_->fork(options, settings_.fork_timeout), settings_);
        vmm::ping_until_answer(clone->agent(), settings_.agent_ready_within);
        return clone;
    }

    void snapshot(const std::string& dir) override {
        if (!vm_) throw std::logic_error("VM " + id_ + " was destroyed");
        vm_->snapshot(dir);
    }

    std::string console_tail() noexcept override {
        if (!vm_) return {};
        try {
            return vm_->console_tail(16384, std::chrono::seconds(2));
        } catch (...) {
            return {};
        }
    }

    std::string stop_reason() noexcept override {
        if (!vm_) return {};
        // The VM reports before it exits, but its agent socket may close
        // first: give the control reader a moment.
        (void)vm_->wait_stopped(std::chrono::steady_clock::now() + std::chrono::milliseconds(250));
        return vm_->stopped_reason().value_or("");
    }

private:
    const std::string id_;
    std::unique_ptr<vmm::VmProcess> vm_;
    std::unique_ptr<vmm::AgentClient> agent_;
    const VmProcessSourceSettings settings_;  // a copy: a fork may outlive the source
};

std::unique_ptr<vmm::VmProcess> restore_zygote(const VmProcessSourceSettings& settings) {
    vmm::CloneOptions options;
    options.hostname = "zygote";
    options.paused = true;
    return vmm::VmProcess::restore(settings.snapshot_dir, options, settings.spawn);
}

}  // namespace

VmProcessSource::VmProcessSource(VmProcessSourceSettings settings)
    : settings_(std::move(settings)), zygote_(restore_zygote(settings_)) {}

VmProcessSource::~VmProcessSource() = default;

vmm::VmProcess& VmProcessSource::live_zygote() {
    if (!zygote_ || zygote_->stopped_reason()) {
        zygote_.reset();
        zygote_ = restore_zygote(settings_);
    }
    return *zygote_;
}

std::unique_ptr<PooledVm> VmProcessSource::fork_paused(const std::string& id) {
    vmm::CloneOptions options;
    options.hostname = id;
    options.paused = true;
    std::unique_ptr<vmm::VmProcess> clone;
    {
        const std::lock_guard lock(mutex_);
        clone = live_zygote().fork(options, settings_.fork_timeout);
    }
    return std::make_unique<ProcessVm>(id, std::move(clone), settings_);
}

pid_t VmProcessSource::zygote_pid() const {
    const std::lock_guard lock(mutex_);
    return zygote_ && !zygote_->stopped_reason() ? zygote_->pid() : -1;
}

}  // namespace forkvm::pool
