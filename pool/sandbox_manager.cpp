#include "pool/sandbox_manager.hpp"

#include <algorithm>
#include <atomic>
#include <exception>
#include <nlohmann/json.hpp>
#include <optional>
#include <utility>

#include "pool/random_id.hpp"
#include "snapshot/export_stream.hpp"
#include "snapshot/snapshot_error.hpp"
#include "vmm/agent_client.hpp"
#include "vmm/agent_error.hpp"
#include "vmm/snapshot_io.hpp"

namespace forkvm::pool {

namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr std::size_t kMaxListLimit = 1000;
constexpr std::size_t kMaxPathLength = 4096;
constexpr std::size_t kMaxPageToken = 512;
constexpr std::uint32_t kMaxDirEntries = 10'000;
// Host-side slack over an exec's own timeout, so the agent's timed_out
// answer arrives before the channel deadline fires.
constexpr std::chrono::seconds kExecGrace{10};

// Why a sandbox whose agent channel is gone is broken: the channel's own
// reason, and the VM's when it reported one (a seccomp violation, a crash).
std::string lost_channel_reason(PooledVm& vm, vmm::AgentClient& agent, vmm::AgentClient::State state) {
    std::string reason = state == vmm::AgentClient::State::broken
                             ? "agent channel broken: " + agent.broken_reason()
                             : std::string("VM stopped");
    if (std::string stopped = vm.stop_reason(); !stopped.empty()) reason += " (" + stopped + ")";
    return reason;
}

ServiceError unavailable() {
    return ServiceError(ErrorCode::unavailable, "the sandbox service is shutting down");
}

// ---- page tokens: base64url("<created ns>:<id>") --------------------------

constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

std::string base64url(const std::string& in) {
    std::string out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (const char ch : in) {
        acc = (acc << 8U) | static_cast<unsigned char>(ch);
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out.push_back(kB64[(acc >> static_cast<unsigned>(bits)) & 0x3FU]);
        }
    }
    if (bits > 0) out.push_back(kB64[(acc << static_cast<unsigned>(6 - bits)) & 0x3FU]);
    return out;
}

std::optional<std::string> unbase64url(const std::string& in) {
    std::string out;
    std::uint32_t acc = 0;
    int bits = 0;
    for (const char ch : in) {
        int v = -1;
        if (ch >= 'A' && ch <= 'Z')
            v = ch - 'A';
        else if (ch >= 'a' && ch <= 'z')
            v = ch - 'a' + 26;
        else if (ch >= '0' && ch <= '9')
            v = ch - '0' + 52;
        else if (ch == '-')
            v = 62;
        else if (ch == '_')
            v = 63;
        if (v < 0) return std::nullopt;
        acc = ((acc << 6U) | static_cast<std::uint32_t>(v)) & 0xFFFFFFU;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> static_cast<unsigned>(bits)) & 0xFFU));
        }
    }
    if (bits >= 6) return std::nullopt;  // a dangling character encodes no byte
    return out;
}

struct PageKey {
    std::int64_t created_ns = 0;
    std::string id;
};

std::int64_t nanos(TimePoint t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

std::string encode_token(const SandboxInfo& last) {
    return base64url(std::to_string(nanos(last.created)) + ":" + last.id);
}

PageKey decode_token(const std::string& token) {
    const auto bad = [] {
        return ServiceError::invalid_argument("page_token", "not a page token from this server");
    };
    if (token.size() > kMaxPageToken) throw bad();
    const std::optional<std::string> raw = unbase64url(token);
    if (!raw) throw bad();
    const std::size_t colon = raw->find(':');
    if (colon == std::string::npos || colon == 0 || colon > 20 || colon + 1 >= raw->size()) throw bad();
    PageKey key;
    std::size_t i = 0;
    const bool negative = (*raw)[0] == '-';
    if (negative) i = 1;
    if (i == colon) throw bad();
    std::int64_t value = 0;
    for (; i < colon; ++i) {
        const char c = (*raw)[i];
        if (c < '0' || c > '9') throw bad();
        if (value > (INT64_MAX - 9) / 10) throw bad();
        value = value * 10 + (c - '0');
    }
    key.created_ns = negative ? -value : value;
    key.id = raw->substr(colon + 1);
    return key;
}

// ---- argument checks -------------------------------------------------------

void check_path(const std::string& path, const std::string& field) {
    if (path.empty() || path.front() != '/')
        throw ServiceError::invalid_argument(field, "must be an absolute guest path");
    if (path.size() > kMaxPathLength)
        throw ServiceError::invalid_argument(field,
                                             "longer than " + std::to_string(kMaxPathLength) + " bytes");
    if (path.find('\0') != std::string::npos)
        throw ServiceError::invalid_argument(field, "contains a NUL byte");
}

void check_env(const EnvMap& env) {
    for (const auto& [key, value] : env) {
        if (key.empty() || key.find('=') != std::string::npos || key.find('\0') != std::string::npos)
            throw ServiceError::invalid_argument("env",
                                                 "variable names must be non-empty without '=' or NUL");
        if (value.find('\0') != std::string::npos)
            throw ServiceError::invalid_argument("env", "value of '" + key + "' contains a NUL byte");
    }
}

void check_user(const std::string& user) {
    if (user.find('\0') != std::string::npos)
        throw ServiceError::invalid_argument("user", "contains a NUL byte");
}

bool labels_match(const Labels& have, const Labels& want) {
    for (const auto& [key, value] : want) {
        const auto it = have.find(key);
        if (it == have.end() || it->second != value) return false;
    }
    return true;
}

template <std::size_t N>
void record(std::array<std::uint64_t, N>& buckets, std::uint64_t& sum_us, SteadyClock::duration latency) {
    const auto us = static_cast<std::uint64_t>(
        std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::microseconds>(latency).count()));
    sum_us += us;
    std::size_t i = 0;
    while (i < lease_latency_bounds_us.size() && us > lease_latency_bounds_us[i]) ++i;
    ++buckets[i];
}

}  // namespace

void validate(const ManagerSettings& settings) {
    validate(settings.registry);
    if (settings.max_fork_count < 1)
        throw ServiceError::invalid_argument("sandbox.max_fork_count", "must be at least 1");
    if (settings.fork_wait.count() < 0)
        throw ServiceError::invalid_argument("sandbox.fork_wait", "must not be negative");
    if (settings.default_exec_timeout.count() < 1)
        throw ServiceError::invalid_argument("exec.default_timeout", "must be positive");
    if (settings.max_exec_timeout < settings.default_exec_timeout)
        throw ServiceError::invalid_argument("exec.max_timeout", "must not be below exec.default_timeout");
    if (settings.max_exec_timeout.count() > std::chrono::milliseconds::rep{UINT32_MAX})
        throw ServiceError::invalid_argument("exec.max_timeout", "too large");
    if (settings.file_timeout.count() < 1)
        throw ServiceError::invalid_argument("files.timeout", "must be positive");
    if (settings.sweep_interval.count() < 1)
        throw ServiceError::invalid_argument("sandbox.sweep_interval", "must be at least 1 ms");
}

// ---- Entry: one sandbox's VM and its call gate -----------------------------

struct SandboxManager::Entry {
    Entry(std::string id_in, std::string owner_in, EnvMap env_in, std::string user_in,
          std::string template_in, std::shared_ptr<const http_proxy::Policy> egress_in, LeasedVm vm_in)
        : id(std::move(id_in)),
          owner(std::move(owner_in)),
          env(std::move(env_in)),
          user(std::move(user_in)),
          template_name(std::move(template_in)),
          egress(std::move(egress_in)),
          vm(std::move(vm_in)) {}
    ~Entry() {
        // The bridge uses the VM's agent client: it stops before the VM goes.
        if (bridge) bridge->close_all("the sandbox is gone");
    }
    Entry(const Entry&) = delete;
    Entry& operator=(const Entry&) = delete;

    const std::string id;
    const std::string owner;
    const EnvMap env;
    const std::string user;
    const std::string template_name;
    const std::shared_ptr<const http_proxy::Policy> egress;
    // Carries the guest's proxied connections; set before the entry is
    // published, null without an egress service.
    std::shared_ptr<EgressBridge> bridge;

    std::mutex mutex;
    std::condition_variable cv;
    LeasedVm vm;                  // empty once destroyed
    std::size_t users = 0;        // threads touching vm: they keep it from being destroyed
    std::size_t agent_calls = 0;  // of those, calls on the agent channel (what fork waits for)
    std::size_t fork_waiters = 0;
    bool forking = false;
    bool releasing = false;              // someone took vm to destroy it
    bool released = false;               // vm destroyed
    std::optional<ServiceError> closed;  // why calls on it fail now
    std::string console;                 // console tail saved before destroying the VM
};

namespace {

using Entry = SandboxManager::Entry;

// Destroys the VM (outside the entry lock), keeping its last console bytes.
void destroy_vm(Entry& e, LeasedVm vm) noexcept {
    if (e.bridge) e.bridge->close_all("the sandbox is gone");
    std::string tail = vm ? vm->console_tail() : std::string();
    vm.release();
    {
        const std::lock_guard lock(e.mutex);
        if (!tail.empty()) e.console = std::move(tail);
        e.released = true;
    }
    e.cv.notify_all();
}

// Takes the VM into `out` if `e` is closed and nobody uses it any more;
// true if the caller must now call destroy_vm(). Requires e.mutex.
bool take_if_idle(Entry& e, LeasedVm& out) {
    if (!e.closed || e.users > 0 || e.forking || e.releasing) return false;
    e.releasing = true;
    out = std::move(e.vm);
    return true;
}

void unpin(Entry& e, bool agent_call) noexcept {
    LeasedVm doomed;
    bool destroy = false;
    {
        const std::lock_guard lock(e.mutex);
        --e.users;
        if (agent_call) --e.agent_calls;
        destroy = take_if_idle(e, doomed);
    }
    e.cv.notify_all();
    if (destroy) destroy_vm(e, std::move(doomed));
}

// Close `e` for good: later calls throw `why`; in-flight calls are cut off by
// closing the agent channel; the VM is destroyed by whoever leaves last.
void close_entry(Entry& e, const ServiceError& why) noexcept {
    LeasedVm doomed;
    bool busy = false;
    bool destroy = false;
    {
        const std::lock_guard lock(e.mutex);
        if (e.closed) return;
        e.closed = why;
        if (e.users > 0 || e.forking) {
            busy = true;
            ++e.users;  // keep vm alive while closing its channel
        } else {
            destroy = take_if_idle(e, doomed);
        }
    }
    e.cv.notify_all();
    if (destroy) destroy_vm(e, std::move(doomed));
    if (busy) {
        try {
            e.vm->agent().close();
        } catch (...) {  // NOLINT(bugprone-empty-catch): a VM without a channel has nothing to cut off
        }
        unpin(e, false);
    }
}

void wait_released(Entry& e) {
    std::unique_lock lock(e.mutex);
    e.cv.wait(lock, [&] { return e.released; });
}

// An agent call inside the entry's gate: waits behind forks, pins the VM.
class AgentCall {
public:
    explicit AgentCall(Entry& e) : e_(e) {
        std::unique_lock lock(e.mutex);
        e.cv.wait(lock, [&] { return e.closed || (!e.forking && e.fork_waiters == 0); });
        if (e.closed) throw *e.closed;
        ++e.users;
        ++e.agent_calls;
    }
    ~AgentCall() { unpin(e_, true); }
    AgentCall(const AgentCall&) = delete;
    AgentCall& operator=(const AgentCall&) = delete;

    vmm::AgentClient& agent() { return e_.vm->agent(); }

private:
    Entry& e_;
};

// fork()'s hold on the source: the channel idle, later calls queued behind it.
class ForkGate {
public:
    ForkGate(Entry& e, std::chrono::milliseconds wait) : e_(e) {
        std::unique_lock lock(e.mutex);
        ++e.fork_waiters;
        // A proxied connection counts like a call: its stream lives in the
        // agent, and a clone would hold a connection its host does not have.
        const auto proxied = [&] { return e.bridge ? e.bridge->open_streams() : std::size_t{0}; };
        const bool idle = e.cv.wait_for(
            lock, wait, [&] { return e.closed || (e.agent_calls == 0 && !e.forking && proxied() == 0); });
        --e.fork_waiters;
        if (e.closed) {
            lock.unlock();
            e.cv.notify_all();
            throw *e.closed;
        }
        if (!idle) {
            // Every cause that still holds (one may have ended just now).
            std::string what;
            const auto add = [&](const std::string& cause) { what += (what.empty() ? "" : ", ") + cause; };
            if (e.agent_calls > 0) add(std::to_string(e.agent_calls) + " call(s) still running");
            if (e.forking) add("another fork or snapshot running");
            if (const std::size_t n = proxied(); n > 0)
                add(std::to_string(n) + " proxied connection(s) still open");
            if (what.empty()) add("calls still running");
            lock.unlock();
            e.cv.notify_all();  // calls queued behind this fork may go now
            throw ServiceError(
                ErrorCode::conflict,
                "sandbox busy: " + what + " after " + std::to_string(wait.count()) + " ms; retry when idle");
        }
        e.forking = true;
    }
    ~ForkGate() {
        LeasedVm doomed;
        bool destroy = false;
        {
            const std::lock_guard lock(e_.mutex);
            e_.forking = false;
            destroy = take_if_idle(e_, doomed);
        }
        e_.cv.notify_all();
        if (destroy) destroy_vm(e_, std::move(doomed));
    }
    ForkGate(const ForkGate&) = delete;
    ForkGate& operator=(const ForkGate&) = delete;

    PooledVm& vm() { return e_.vm.vm(); }

private:
    Entry& e_;
};

}  // namespace

// ---- SandboxManager ---------------------------------------------------------

SandboxManager::SandboxManager(WarmPool& pool, ManagerSettings settings, SandboxRegistry::Clock clock,
                               IdGenerator make_id, Catalog catalog, EgressService* egress)
    : pool_(pool),
      catalog_(catalog),
      egress_(egress),
      settings_((validate(settings), settings)),
      make_id_(make_id ? std::move(make_id) : IdGenerator([] {
          // "sb-" + 20 hex digits (80 random bits), as the API promises.
          return random_id("sb-") + random_id("").substr(12);
      })),
      clock_(clock ? std::move(clock)
                   : SandboxRegistry::Clock([] { return std::chrono::system_clock::now(); })),
      registry_(settings_.registry, clock_),
      clone_gauge_(std::make_shared<std::atomic<std::size_t>>(0)) {
    sweeper_ = std::thread([this] { sweeper_loop(); });
}

SandboxManager::~SandboxManager() { shutdown(); }

std::shared_ptr<SandboxManager::Entry> SandboxManager::make_entry(
    const std::string& id, const std::string& owner, const EnvMap& env, const std::string& user,
    const std::string& template_name, std::shared_ptr<const http_proxy::Policy> egress, LeasedVm vm) {
    auto entry = std::make_shared<Entry>(id, owner, env, user, template_name, egress, std::move(vm));
    if (egress_ == nullptr) return entry;
    entry->bridge = egress_->attach(entry->vm->agent(), std::move(egress), id);
    // A fork waiting for proxied connections to end hears when the last one does.
    entry->bridge->set_on_idle([weak = std::weak_ptr<Entry>(entry)] {
        if (const auto e = weak.lock()) {
            { const std::lock_guard lock(e->mutex); }
            e->cv.notify_all();
        }
    });
    return entry;
}

void SandboxManager::sweeper_loop() {
    std::unique_lock lock(mutex_);
    while (!stopping_) {
        sweeper_cv_.wait_for(lock, settings_.sweep_interval, [this] { return stopping_; });
        if (stopping_) break;
        lock.unlock();
        try {
            sweep();
        } catch (...) {  // NOLINT(bugprone-empty-catch): out of memory at worst; the next round retries
        }
        lock.lock();
    }
}

void SandboxManager::sweep() {
    const std::vector<SandboxInfo> due = registry_.expire_due(clock_());
    std::vector<std::shared_ptr<Entry>> alive;
    {
        const std::lock_guard lock(mutex_);
        expired_ += due.size();
        for (const auto& [id, entry] : entries_) alive.push_back(entry);
    }
    for (const SandboxInfo& info : due) {
        if (auto e = take_entry(info.id)) {
            close_entry(
                *e, ServiceError(ErrorCode::expired, "sandbox '" + info.id + "' expired (its TTL ran out)"));
        }
    }
    // A VM whose channel died between calls is noticed here, not only by the next call.
    for (const auto& e : alive) {
        {
            const std::lock_guard lock(e->mutex);
            if (e->closed || e->released) continue;
            ++e->users;
        }
        std::string reason;
        try {
            vmm::AgentClient& agent = e->vm->agent();
            const auto state = agent.state();
            if (state == vmm::AgentClient::State::broken || state == vmm::AgentClient::State::closed)
                reason = lost_channel_reason(e->vm.vm(), agent, state);
        } catch (const std::exception& ex) {
            reason = std::string("VM unusable: ") + ex.what();
        }
        unpin(*e, false);
        if (!reason.empty()) mark_broken(*e, reason);
    }
}

std::shared_ptr<SandboxManager::Entry> SandboxManager::take_entry(const std::string& id) {
    const std::lock_guard lock(mutex_);
    const auto it = entries_.find(id);
    if (it == entries_.end()) return nullptr;
    auto e = std::move(it->second);
    entries_.erase(it);
    return e;
}

std::shared_ptr<SandboxManager::Entry> SandboxManager::entry_for(const std::string& owner,
                                                                 const std::string& id) {
    (void)registry_.get(id, owner);  // not_found / expired, with the owner check
    const std::lock_guard lock(mutex_);
    if (stopping_) throw unavailable();
    const auto it = entries_.find(id);
    if (it == entries_.end() || it->second->owner != owner)
        throw ServiceError::not_found("no sandbox '" + id + "'");
    return it->second;
}

Sandbox SandboxManager::to_sandbox(SandboxInfo info) {
    std::shared_ptr<Entry> entry;
    {
        const std::lock_guard lock(mutex_);
        const auto it = entries_.find(info.id);
        if (it != entries_.end()) entry = it->second;
    }
    // Copied outside the manager's lock (a policy may be large); these fields never change.
    Sandbox out;
    if (entry) {
        out.env = entry->env;
        out.user = entry->user;
        out.template_name = entry->template_name;
        out.egress = *entry->egress;
    }
    out.info = std::move(info);
    return out;
}

void SandboxManager::mark_broken(Entry& e, const std::string& reason) noexcept {
    try {
        registry_.mark_broken(e.id, reason);
    } catch (...) {  // NOLINT(bugprone-empty-catch): deleted or expired meanwhile; nothing to mark
    }
    close_entry(e, ServiceError(ErrorCode::vm_broken, "sandbox '" + e.id + "' is broken: " + reason));
}

void SandboxManager::check_host_memory() const {
    if (settings_.min_free_memory == 0 || !settings_.memory_probe) return;
    const auto available = settings_.memory_probe();
    if (!available || *available >= settings_.min_free_memory) return;
    constexpr std::uint32_t kRetryAfterSeconds = 5;
    throw ServiceError(ErrorCode::insufficient_memory,
                       "the host is short of memory (" + std::to_string(*available >> 20U) +
                           " MiB available, " + std::to_string(settings_.min_free_memory >> 20U) +
                           " MiB kept free)",
                       std::nullopt, kRetryAfterSeconds);
}

Sandbox SandboxManager::create(const std::string& owner, const CreateSandbox& request) {
    check_env(request.env);
    check_user(request.user);
    check_host_memory();
    {
        const std::lock_guard lock(mutex_);
        if (stopping_) throw unavailable();
    }
    // The request's policy, else the template's; the default pool's is empty (nothing allowed).
    auto egress = std::make_shared<const http_proxy::Policy>(
        request.egress
            ? *request.egress
            : (request.template_name.empty() ? http_proxy::Policy()
                                             : templates().get(owner, request.template_name).egress));
    const std::string id = make_id_();
    SandboxInfo info = registry_.create(id, owner, request.ttl, request.labels);
    std::shared_ptr<Entry> entry;
    try {
        // The sandbox id becomes the guest's hostname as the VM resumes.
        LeasedVm vm = request.template_name.empty() ? pool_.lease(id)
                                                    : templates().lease(owner, request.template_name, id);
        entry =
            make_entry(id, owner, request.env, request.user, request.template_name, egress, std::move(vm));
    } catch (const ServiceError&) {
        registry_.erase(id);
        throw;
    } catch (const std::exception& ex) {
        registry_.erase(id);
        throw ServiceError::internal(std::string("lease failed: ") + ex.what());
    }
    bool inserted = false;
    {
        const std::lock_guard lock(mutex_);
        if (!stopping_) {
            entries_.emplace(id, entry);
            ++created_;
            inserted = true;
        }
    }
    try {
        if (!inserted) throw unavailable();
        // Entry first, then running: a sweeper that expires the sandbox in
        // between finds the entry and destroys it; one that expired it before
        // makes mark_running throw not_found.
        registry_.mark_running(id);  // not_found if the sweeper expired it already
    } catch (const ServiceError& err) {
        (void)take_entry(id);
        registry_.erase(id);
        close_entry(*entry, err);
        if (err.code() == ErrorCode::not_found)
            throw ServiceError(ErrorCode::expired, "sandbox '" + id + "' expired while starting");
        throw;
    }
    info.state = SandboxState::running;
    Sandbox out;
    out.info = std::move(info);
    out.env = request.env;
    out.user = request.user;
    out.template_name = request.template_name;
    out.egress = *egress;
    return out;
}

Sandbox SandboxManager::get(const std::string& owner, const std::string& id) {
    return to_sandbox(registry_.get(id, owner));
}

SandboxPage SandboxManager::list(const std::string& owner, const ListSandboxes& request) {
    if (request.limit < 1 || request.limit > kMaxListLimit)
        throw ServiceError::invalid_argument("limit", "must be 1 to " + std::to_string(kMaxListLimit));
    std::optional<PageKey> after;
    if (!request.page_token.empty()) after = decode_token(request.page_token);

    SandboxPage page;
    const std::vector<SandboxInfo> all = registry_.list(owner);  // oldest first, ties by id
    std::optional<SandboxInfo> last;
    bool more = false;
    for (const SandboxInfo& info : all) {
        if (after) {
            const std::int64_t created = nanos(info.created);
            if (created < after->created_ns || (created == after->created_ns && info.id <= after->id))
                continue;
        }
        if (!labels_match(info.labels, request.label_filter)) continue;
        if (page.sandboxes.size() == request.limit) {
            more = true;
            break;
        }
        last = info;
        page.sandboxes.push_back(to_sandbox(info));
    }
    if (more && last) page.next_page_token = encode_token(*last);
    return page;
}

void SandboxManager::remove(const std::string& owner, const std::string& id) {
    (void)registry_.remove(id, owner);
    if (auto e = take_entry(id)) close_entry(*e, ServiceError::not_found("sandbox '" + id + "' was deleted"));
}

Sandbox SandboxManager::keep_alive(const std::string& owner, const std::string& id,
                                   std::optional<std::chrono::milliseconds> ttl) {
    return to_sandbox(registry_.keep_alive(id, owner, ttl));
}

std::string SandboxManager::console_tail(const std::string& owner, const std::string& id) {
    const std::shared_ptr<Entry> e = entry_for(owner, id);
    {
        std::unique_lock lock(e->mutex);
        if (e->closed) {
            // Saved when the VM is destroyed, which the last call out of it
            // (cut off by the closed channel) does about now.
            e->cv.wait(lock, [&] { return e->released; });
            return e->console;
        }
        ++e->users;
    }
    std::string tail = e->vm->console_tail();
    unpin(*e, false);
    return tail;
}

template <class F>
auto SandboxManager::with_agent(const std::string& owner, const std::string& id,
                                const AgentCallContext& context, F&& f) {
    const std::shared_ptr<Entry> e = entry_for(owner, id);
    AgentCall call(*e);
    vmm::AgentClient* agent = nullptr;
    try {
        agent = &call.agent();
    } catch (const std::exception& ex) {
        mark_broken(*e, std::string("VM unusable: ") + ex.what());
        throw ServiceError(ErrorCode::vm_broken, "sandbox '" + id + "' is broken: VM unusable");
    }
    try {
        return f(*agent, static_cast<const Entry&>(*e));
    } catch (const vmm::AgentError& err) {
        if (!is_channel_lost(err.code())) throw to_service_error(err, context);
        {
            // Deleted, expired or shut down while running: say that, not "broken".
            const std::lock_guard lock(e->mutex);
            if (e->closed) throw *e->closed;
        }
        const std::string reason =
            lost_channel_reason(e->vm.vm(), *agent,
                                err.code() == vmm::AgentErrorCode::broken ? vmm::AgentClient::State::broken
                                                                          : vmm::AgentClient::State::closed);
        mark_broken(*e, reason);
        const std::lock_guard lock(e->mutex);
        throw e->closed ? *e->closed : to_service_error(err, context);
    }
}

vmm::ExecRequest SandboxManager::exec_request(const Entry& entry, const ExecCall& call) const {
    if (call.argv.empty() || call.argv.front().empty())
        throw ServiceError::invalid_argument("cmd", "must name a program");
    check_env(call.env);
    check_user(call.user);
    if (!call.cwd.empty()) check_path(call.cwd, "cwd");
    if (call.timeout.count() < 0) throw ServiceError::invalid_argument("timeout_ms", "must be positive");
    if (call.timeout > settings_.max_exec_timeout) {
        throw ServiceError::invalid_argument(
            "timeout_ms", "must not exceed " + std::to_string(settings_.max_exec_timeout.count()) + " ms");
    }
    vmm::ExecRequest req;
    req.argv = call.argv;
    EnvMap env = entry.env;
    for (const auto& [key, value] : call.env) env[key] = value;
    req.env.reserve(env.size());
    for (const auto& [key, value] : env) req.env.push_back(key + "=" + value);
    req.cwd = call.cwd;
    req.user = call.user.empty() ? entry.user : call.user;
    const std::chrono::milliseconds timeout =
        call.timeout.count() == 0 ? settings_.default_exec_timeout : call.timeout;
    req.timeout_ms = static_cast<std::uint32_t>(timeout.count());
    req.stdin_data = call.stdin_data;
    req.stdout_cap = std::min(call.max_output_bytes, settings_.max_output_bytes);
    req.stderr_cap = req.stdout_cap;
    return req;
}

void SandboxManager::record_exec(SteadyClock::duration latency) {
    const std::lock_guard lock(mutex_);
    ++execs_;
    record(exec_buckets_, exec_latency_sum_us_, latency);
}

void SandboxManager::record_fork(SteadyClock::duration latency) {
    const std::lock_guard lock(mutex_);
    record(fork_buckets_, fork_latency_sum_us_, latency);
}

vmm::ExecResult SandboxManager::exec(const std::string& owner, const std::string& id, const ExecCall& call,
                                     const vmm::ExecCallbacks& callbacks, std::stop_token stop) {
    return with_agent(owner, id, {}, [&](vmm::AgentClient& agent, const Entry& entry) {
        const vmm::ExecRequest req = exec_request(entry, call);
        const auto start = SteadyClock::now();
        vmm::ExecResult result = agent.exec(
            req, callbacks, std::chrono::milliseconds(req.timeout_ms) + kExecGrace, std::move(stop));
        record_exec(SteadyClock::now() - start);
        return result;
    });
}

vmm::BufferedExecResult SandboxManager::exec_buffered(const std::string& owner, const std::string& id,
                                                      const ExecCall& call, std::stop_token stop) {
    return with_agent(owner, id, {}, [&](vmm::AgentClient& agent, const Entry& entry) {
        vmm::ExecRequest req = exec_request(entry, call);
        const auto deadline = std::chrono::milliseconds(req.timeout_ms) + kExecGrace;
        const auto start = SteadyClock::now();
        vmm::BufferedExecResult result = agent.exec_buffered(std::move(req), deadline, std::move(stop));
        record_exec(SteadyClock::now() - start);
        return result;
    });
}

void SandboxManager::write_file(const std::string& owner, const std::string& id,
                                const vmm::WriteFileRequest& request, std::uint64_t total_size,
                                const vmm::DataSource& source, std::stop_token stop) {
    check_path(request.path, "path");
    if (request.mode > 07777)
        throw ServiceError::invalid_argument("mode", "must be an octal mode up to 07777");
    with_agent(owner, id, {request.path, "path"}, [&](vmm::AgentClient& agent, const Entry&) {
        agent.write_file(request, total_size, source, settings_.file_timeout, std::move(stop));
        return 0;
    });
}

vmm::ReadFileResult SandboxManager::read_file(const std::string& owner, const std::string& id,
                                              const vmm::ReadFileRequest& request, const vmm::DataSink& sink,
                                              std::stop_token stop) {
    check_path(request.path, "path");
    return with_agent(owner, id, {request.path, "path"}, [&](vmm::AgentClient& agent, const Entry&) {
        return agent.read_file(request, sink, settings_.file_timeout, std::move(stop));
    });
}

proto::StatResult SandboxManager::stat(const std::string& owner, const std::string& id,
                                       const std::string& path) {
    check_path(path, "path");
    return with_agent(owner, id, {path, "path"}, [&](vmm::AgentClient& agent, const Entry&) {
        // Not following symlinks, so a link is reported as one.
        return agent.stat(path, false, settings_.file_timeout);
    });
}

proto::DirEntries SandboxManager::list_dir(const std::string& owner, const std::string& id,
                                           const std::string& path) {
    check_path(path, "path");
    return with_agent(owner, id, {path, "path"}, [&](vmm::AgentClient& agent, const Entry&) {
        return agent.list_dir(path, kMaxDirEntries, settings_.file_timeout);
    });
}

void SandboxManager::mkdir(const std::string& owner, const std::string& id, const std::string& path,
                           bool parents, std::uint32_t mode) {
    check_path(path, "path");
    if (mode > 07777) throw ServiceError::invalid_argument("mode", "must be an octal mode up to 07777");
    with_agent(owner, id, {path, "path"}, [&](vmm::AgentClient& agent, const Entry&) {
        agent.mkdir(path, parents, mode, settings_.file_timeout);
        return 0;
    });
}

void SandboxManager::move(const std::string& owner, const std::string& id, const std::string& from,
                          const std::string& to) {
    check_path(from, "from");
    check_path(to, "to");
    with_agent(owner, id, {from + "' -> '" + to, "from"}, [&](vmm::AgentClient& agent, const Entry&) {
        agent.rename(from, to, settings_.file_timeout);
        return 0;
    });
}

void SandboxManager::remove_path(const std::string& owner, const std::string& id, const std::string& path,
                                 bool recursive) {
    check_path(path, "path");
    with_agent(owner, id, {path, "path"}, [&](vmm::AgentClient& agent, const Entry&) {
        agent.remove(path, recursive, settings_.file_timeout);
        return 0;
    });
}

std::vector<Sandbox> SandboxManager::fork(const std::string& owner, const std::string& id,
                                          const ForkSandbox& request) {
    if (request.count < 1 || request.count > settings_.max_fork_count) {
        throw ServiceError::invalid_argument("count",
                                             "must be 1 to " + std::to_string(settings_.max_fork_count));
    }
    const SandboxInfo source = registry_.get(id, owner);
    check_host_memory();
    if (source.state == SandboxState::broken)
        throw ServiceError(ErrorCode::vm_broken, "sandbox '" + id + "' is broken: " + source.broken_reason);
    const std::shared_ptr<Entry> e = entry_for(owner, id);
    const Labels& labels = request.labels.empty() ? source.labels : request.labels;

    // Throws conflict ("sandbox busy") before anything was made: not a failed fork.
    ForkGate gate(*e, settings_.fork_wait);
    std::vector<Sandbox> out;
    std::vector<std::shared_ptr<Entry>> made;
    const auto undo = [&] {
        for (const auto& clone : made) {
            (void)take_entry(clone->id);
            registry_.erase(clone->id);
            close_entry(*clone, ServiceError::not_found("fork of '" + id + "' failed"));
        }
    };
    try {
        for (std::size_t i = 0; i < request.count; ++i) {
            const std::string clone_id = make_id_();
            SandboxInfo info = registry_.create(clone_id, owner, request.ttl, labels);
            std::unique_ptr<PooledVm> vm;
            try {
                const auto start = SteadyClock::now();
                vm = gate.vm().fork(clone_id);
                if (!vm) throw ServiceError::internal("fork returned no VM");
                record_fork(SteadyClock::now() - start);
            } catch (...) {
                {
                    // Only a VM that failed to fork counts as a fork failure (not caps).
                    const std::lock_guard lock(mutex_);
                    ++fork_failures_;
                }
                registry_.erase(clone_id);
                throw;
            }
            clone_gauge_->fetch_add(1);
            auto clone = make_entry(clone_id, owner, e->env, e->user, e->template_name, e->egress,
                                    LeasedVm(std::move(vm), clone_gauge_));
            made.push_back(clone);  // undo() destroys it from here on
            {
                const std::lock_guard lock(mutex_);
                if (stopping_) throw unavailable();
                entries_.emplace(clone_id, clone);
                ++created_;
                ++forks_;
            }
            registry_.mark_running(clone_id);
            info.state = SandboxState::running;
            Sandbox sandbox;
            sandbox.info = std::move(info);
            sandbox.env = e->env;
            sandbox.user = e->user;
            sandbox.template_name = e->template_name;
            sandbox.egress = *e->egress;
            out.push_back(std::move(sandbox));
        }
    } catch (const ServiceError&) {
        undo();
        throw;
    } catch (const vmm::AgentError& err) {
        undo();
        throw to_service_error(err);
    } catch (const std::exception& ex) {
        undo();
        // The VM process refuses a fork while bytes still move on the agent
        // channel (an exec the host gave up on may still be talking): the
        // sandbox is busy, try again. Anything else failed in the VM layer.
        const std::string what = ex.what();
        if (what.find("agent channel busy") != std::string::npos) {
            throw ServiceError(ErrorCode::conflict,
                               "sandbox '" + id + "' is busy: its agent channel is in use");
        }
        throw ServiceError(ErrorCode::vm_broken, "fork of '" + id + "' failed: " + what);
    }
    return out;
}

// --- snapshots and templates ------------------------------------------------------

SnapshotStore& SandboxManager::snapshots() const {
    if (catalog_.snapshots == nullptr)
        throw ServiceError(ErrorCode::unavailable, "snapshots are not enabled here");
    return *catalog_.snapshots;
}

TemplateCatalog& SandboxManager::templates() const {
    if (catalog_.templates == nullptr)
        throw ServiceError(ErrorCode::unavailable, "templates are not enabled here");
    return *catalog_.templates;
}

SnapshotInfo SandboxManager::snapshot(const std::string& owner, const std::string& id,
                                      const CreateSnapshot& request) {
    SnapshotStore& store = snapshots();
    const SandboxInfo source = registry_.get(id, owner);
    if (source.state == SandboxState::broken)
        throw ServiceError(ErrorCode::vm_broken, "sandbox '" + id + "' is broken: " + source.broken_reason);
    check_host_memory();
    const std::shared_ptr<Entry> e = entry_for(owner, id);
    // Like a fork: the guest is saved mid-session, so its agent channel must be idle.
    ForkGate gate(*e, settings_.fork_wait);
    try {
        return store.create(owner, id, request.labels,
                            [&](const std::string& dir) { gate.vm().snapshot(dir); });
    } catch (const ServiceError&) {
        throw;
    } catch (const std::exception& ex) {
        const std::string what = ex.what();
        if (what.find("agent channel busy") != std::string::npos) {
            throw ServiceError(ErrorCode::conflict,
                               "sandbox '" + id + "' is busy: its agent channel is in use");
        }
        if (what.find("No space left") != std::string::npos) {
            throw ServiceError(ErrorCode::unavailable,
                               "snapshot of '" + id + "' failed: the server's disk is full", std::nullopt,
                               30);
        }
        throw ServiceError(ErrorCode::vm_broken, "snapshot of '" + id + "' failed: " + what);
    }
}

std::vector<SnapshotInfo> SandboxManager::list_snapshots(const std::string& owner) {
    return snapshots().list(owner);
}

SnapshotInfo SandboxManager::get_snapshot(const std::string& owner, const std::string& snapshot_id) {
    return snapshots().get(owner, snapshot_id);
}

void SandboxManager::remove_snapshot(const std::string& owner, const std::string& snapshot_id) {
    snapshots().remove(owner, snapshot_id);
}

void SandboxManager::export_snapshot(const std::string& owner, const std::string& snapshot_id,
                                     const vmm::DataSink& sink) {
    SnapshotStore& store = snapshots();
    const SnapshotInfo info = store.get(owner, snapshot_id);
    nlohmann::json meta = {
        {"id", info.id},
        {"labels", info.labels},
        {"source_sandbox", info.source_sandbox},
        {"created_unix_ms",
         std::chrono::duration_cast<std::chrono::milliseconds>(info.created.time_since_epoch()).count()}};
    try {
        snapshot::write_export(store.dir_of(owner, snapshot_id), meta, sink);
    } catch (const snapshot::SnapshotError& e) {
        if (e.kind() == snapshot::SnapshotErrorKind::not_found) {
            throw ServiceError::not_found("no snapshot '" + snapshot_id + "'");  // deleted meanwhile
        }
        throw ServiceError::internal(std::string("export failed: ") + e.what());
    }
}

SnapshotInfo SandboxManager::import_snapshot(const std::string& owner, const vmm::DataSource& source) {
    SnapshotStore& store = snapshots();
    Labels labels;
    try {
        // `labels` is read by create() after the writer filled it in.
        return store.create(owner, "", labels, [&](const std::string& dir) {
            // Nothing larger than what the owner's disk quota still allows is ever written.
            snapshot::ImportLimits limits = settings_.import_limits;
            limits.max_memory_bytes = std::min(limits.max_memory_bytes, store.bytes_left(owner));
            const auto meta = snapshot::read_export(source, dir, limits);
            vmm::check_snapshot_runs_here(dir);
            // Labels travel with the snapshot; anything malformed in them is dropped.
            const auto it = meta.find("labels");
            if (it != meta.end() && it->is_object()) {
                for (const auto& [k, v] : it->items()) {
                    if (!v.is_string() || labels.size() >= kMaxSnapshotLabels || k.empty() ||
                        k.size() > kMaxLabelKeyLength ||
                        v.get_ref<const std::string&>().size() > kMaxLabelValueLength) {
                        continue;
                    }
                    labels[k] = v.get<std::string>();
                }
            }
        });
    } catch (const snapshot::SnapshotError& e) {
        switch (e.kind()) {
            case snapshot::SnapshotErrorKind::too_large:
                throw ServiceError(ErrorCode::payload_too_large,
                                   std::string("snapshot import refused: ") + e.what(), "body");
            case snapshot::SnapshotErrorKind::io:
                if (std::string_view(e.what()).find("No space left") != std::string_view::npos) {
                    throw ServiceError(ErrorCode::unavailable,
                                       "snapshot import failed: the server's disk is full", std::nullopt, 30);
                }
                throw ServiceError::internal(std::string("snapshot import failed: ") + e.what());
            case snapshot::SnapshotErrorKind::incompatible:
                throw ServiceError::invalid_argument(
                    "body", std::string("the snapshot cannot run on this host: ") + e.what());
            default:
                throw ServiceError::invalid_argument("body", std::string("not a valid snapshot export (") +
                                                                 std::string(snapshot::kind_name(e.kind())) +
                                                                 "): " + e.what());
        }
    }
}

TemplateInfo SandboxManager::create_template(const std::string& owner, const CreateTemplate& request) {
    check_host_memory();
    return templates().create(owner, request);
}

std::vector<TemplateInfo> SandboxManager::list_templates(const std::string& owner) {
    return templates().list(owner);
}

TemplateInfo SandboxManager::get_template(const std::string& owner, const std::string& name) {
    return templates().get(owner, name);
}

TemplateInfo SandboxManager::update_template(const std::string& owner, const std::string& name,
                                             const UpdateTemplate& request) {
    return templates().update(owner, name, request);
}

void SandboxManager::remove_template(const std::string& owner, const std::string& name) {
    templates().remove(owner, name);
}

std::vector<PoolInfo> SandboxManager::pools(const std::string& owner) {
    std::vector<PoolInfo> out;
    PoolInfo base;
    base.min_warm = pool_.settings().min_warm;
    base.max_warm = pool_.settings().max_warm;
    base.stats = pool_.stats();
    base.stats.leased += clone_gauge_->load();  // as stats(): forks of leased VMs count as leased
    out.push_back(base);
    if (catalog_.templates != nullptr) {
        auto mine = catalog_.templates->pools(owner);
        out.insert(out.end(), std::make_move_iterator(mine.begin()), std::make_move_iterator(mine.end()));
    }
    return out;
}

bool SandboxManager::ready() {
    {
        const std::lock_guard lock(mutex_);
        if (stopping_) return false;
    }
    return pool_.stats().warm >= 1;
}

ServiceStats SandboxManager::stats() {
    ServiceStats s;
    s.pool = pool_.stats();
    s.pool.leased += clone_gauge_->load();
    s.min_warm = pool_.settings().min_warm;
    s.max_warm = pool_.settings().max_warm;
    s.live_sandboxes = registry_.live_count();
    const std::lock_guard lock(mutex_);
    s.sandboxes_created = created_;
    s.sandboxes_expired = expired_;
    s.sandbox_forks = forks_;
    s.fork_failures = fork_failures_;
    s.fork_latency_sum_us = fork_latency_sum_us_;
    s.fork_latency_buckets = fork_buckets_;
    s.execs = execs_;
    s.exec_latency_sum_us = exec_latency_sum_us_;
    s.exec_latency_buckets = exec_buckets_;
    if (egress_ != nullptr) s.egress = egress_->stats();
    return s;
}

void SandboxManager::shutdown() noexcept {
    const std::lock_guard serial(shutdown_mutex_);
    std::unordered_map<std::string, std::shared_ptr<Entry>> all;
    {
        const std::lock_guard lock(mutex_);
        stopping_ = true;
        all.swap(entries_);
    }
    sweeper_cv_.notify_all();
    if (sweeper_.joinable()) sweeper_.join();
    for (auto& [id, e] : all) close_entry(*e, unavailable());
    for (auto& [id, e] : all) wait_released(*e);
}

}  // namespace forkvm::pool
