// forkvm serve: the REST API over a warm pool of forked VMs (docs/api.md).
//
// Startup: configuration (file, FORKVM_* environment, flags) -> per-VM
// cgroups -> with server.user, the drop to that user (cli/server_user.hpp)
// -> a trial jail -> the golden snapshot (cached, or a golden VM booted
// once) -> a zygote restored from it -> the warm pool forking from the
// zygote -> the HTTP server. SIGTERM or SIGINT stop it gracefully: no new
// connections, in-flight requests end within server.shutdown_deadline,
// then every VM is destroyed.
//
// VM processes are started with posix_spawn (the golden VM and the zygote)
// or forked from the single-threaded zygote VM process (every clone) —
// never by forking this multithreaded server.

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <spdlog/spdlog.h>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.hpp"
#include "cli/guest_defaults.hpp"
#include "cli/log_setup.hpp"
#include "cli/server_user.hpp"
#include "cli/service_stack.hpp"
#include "cli/vm_options.hpp"
#include "config/config.hpp"
#include "pool/golden_snapshot.hpp"
#include "pool/sandbox_manager.hpp"
#include "pool/service_error.hpp"
#include "pool/warm_pool.hpp"
#include "server/http_server.hpp"
#include "server/server_options.hpp"
#include "server/tls_context.hpp"
#include "vmm/jail.hpp"

extern char** environ;

namespace forkvm::cli {
namespace {

// Logs "pool warming N/M" as the pool fills, until it is full or `stop`.
void log_warming(const pool::WarmPool& pool, const std::stop_token& stop) {
    const std::size_t target = pool.settings().min_warm;
    std::size_t shown = static_cast<std::size_t>(-1);
    while (!stop.stop_requested()) {
        const std::size_t warm = std::min(pool.stats().warm, target);
        if (warm != shown) {
            shown = warm;
            spdlog::info("pool warming {}/{}", warm, target);
            if (warm >= target) {
                spdlog::info("pool warm: {} VMs ready", warm);
                return;
            }
        }
        pool.wait_warm(warm + 1, std::chrono::milliseconds(200));
    }
}

// Under scripts/with-kvm's emulated KVM host (no /dev/kvm on this machine).
void banner_if_emulated() {
    const char* emulated = std::getenv("WITH_KVM_EMULATED");
    if (emulated == nullptr || std::string(emulated) != "1") return;
    spdlog::warn("*****************************************************************");
    spdlog::warn("* forkvm runs inside an EMULATED KVM host (QEMU TCG, nested SVM):");
    spdlog::warn("* everything is 10-100x slower than on a real KVM host. Use it to");
    spdlog::warn("* try the API, never to judge latency.");
    spdlog::warn("*****************************************************************");
}

// SIGTERM and SIGINT, taken by a thread of their own (sigwait) and blocked
// everywhere else: the mask is set before any other thread starts, so every
// thread inherits it. Before the server runs (a golden boot can take
// minutes), a signal ends the process at once: every VM process dies with
// us (PR_SET_PDEATHSIG) and the next start removes a half-written snapshot.
// Once running, the first signal starts a graceful stop (wait_running()
// returns it); a second one ends the process at once.
class StopSignals {
public:
    StopSignals() {
        sigemptyset(&set_);
        sigaddset(&set_, SIGTERM);
        sigaddset(&set_, SIGINT);
        pthread_sigmask(SIG_BLOCK, &set_, nullptr);
        thread_ = std::thread([this] { run(); });
    }
    ~StopSignals() {
        {
            const std::lock_guard lock(mutex_);
            done_ = true;
        }
        pthread_kill(thread_.native_handle(), SIGTERM);  // wakes its sigwait
        thread_.join();
    }
    StopSignals(const StopSignals&) = delete;
    StopSignals& operator=(const StopSignals&) = delete;

    // Marks the server as running and blocks until a stop signal arrives.
    int wait_running() {
        std::unique_lock lock(mutex_);
        running_ = true;
        cv_.wait(lock, [this] { return received_ != 0; });
        return received_;
    }

private:
    void run() {
        for (;;) {
            int sig = 0;
            sigwait(&set_, &sig);
            const std::unique_lock lock(mutex_);
            if (done_) return;
            if (!running_ || received_ != 0) {
                spdlog::warn("{} {}: exiting now", signal_name(sig),
                             running_ ? "again during the stop" : "during startup");
                spdlog::default_logger()->flush();
                std::_Exit(128 + sig);
            }
            received_ = sig;
            cv_.notify_all();
        }
    }

    static const char* signal_name(int sig) { return sig == SIGTERM ? "SIGTERM" : "SIGINT"; }

    sigset_t set_{};
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable cv_;
    bool running_ = false;
    bool done_ = false;
    int received_ = 0;
};

// Lets as many connections as configured open without starving VM
// processes and agent sockets of descriptors: the soft limit goes up to the
// hard one, and a warning says if max_connections still does not fit.
void raise_fd_limit(std::size_t max_connections) {
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
    if (limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &limit);
        ::getrlimit(RLIMIT_NOFILE, &limit);
    }
    constexpr rlim_t kReserve = 1024;  // VM processes, agent and control sockets, files
    if (limit.rlim_cur != RLIM_INFINITY && limit.rlim_cur < max_connections + kReserve) {
        spdlog::warn(
            "open file limit {} is low for server.max_connections = {} (+{} for VMs): raise "
            "RLIMIT_NOFILE or lower max_connections",
            static_cast<unsigned long long>(limit.rlim_cur), max_connections,
            static_cast<unsigned long long>(kReserve));
    }
}

// VM processes run guest code: unless the operator said otherwise, they run
// jailed, and a host where that cannot be done is an error, not a silent
// downgrade (docs/security.md).
bool check_jail(const config::Config& c) {
    if (!c.jail.enabled) {
        spdlog::warn(
            "jail.enabled is false: VM processes run with the server's uid and see its files "
            "(docs/security.md)");
    } else if (auto reason = vmm::jail_unavailable_reason()) {
        spdlog::error(
            "cannot jail VM processes: {}. Run forkvm serve as root (server.user drops to an "
            "unprivileged user after start-up), or set jail.enabled=false (FORKVM_JAIL_ENABLED=false) "
            "to run them unjailed",
            *reason);
        return false;
    } else {
        spdlog::info("VM processes are jailed: uids {}..{}, seccomp {}", c.jail.uid_base,
                     static_cast<std::int64_t>(c.jail.uid_base) + c.jail.uid_count - 1, c.jail.seccomp);
    }
    if (c.jail.seccomp != "enforce") {
        spdlog::warn("jail.seccomp is {}: a forbidden system call in a VM process is {}", c.jail.seccomp,
                     c.jail.seccomp == "log" ? "logged by the kernel and allowed" : "not even noticed");
    }
    return true;
}

int serve_main(const config::LoadResult& loaded) {
    const config::Config& c = loaded.config;
    setup_logging(c.log.level, c.log.format);
    banner_if_emulated();
    if (!loaded.config_file.empty()) spdlog::info("config file {}", loaded.config_file);
    if (c.auth.api_keys.empty()) {
        spdlog::error("no API keys: set auth.api_keys in the config file or FORKVM_API_KEYS");
        return 2;
    }

    // Taken as whoever started us, before any thread exists: the cgroups
    // (set up once), and, for server.user, /dev/kvm and the drop itself.
    std::shared_ptr<const vmm::CgroupHost> cgroups = detect_cgroups();
    UniqueFd kvm_device;
    if (!c.server.user.empty()) {
        try {
            const ServerUser user = resolve_server_user(c.server.user);
            kvm_device = become_server_user(user, c, *cgroups);
            spdlog::info("running as {} (uid {}, gid {}), keeping {}", user.name, user.uid, user.gid,
                         vmm::capability_names(vmm::current_capabilities().effective));
        } catch (const std::exception& e) {
            spdlog::error("{}", e.what());
            return 2;
        }
    }
    if (!check_jail(c)) return 2;

    StopSignals stop_signals;
    const server::ServerOptions server_options = server::server_options_from(c);
    raise_fd_limit(server_options.max_connections);
    // Bad certificate files fail now, not after minutes of golden VM boot.
    if (!server_options.tls_cert.empty())
        server::make_tls_context(server_options.tls_cert, server_options.tls_key);

    ServiceStack stack(c, cgroups, kvm_device.get());
    pool::WarmPool& warm_pool = stack.warm_pool();
    pool::SandboxManager& manager = stack.manager();
    std::jthread warming([&warm_pool](const std::stop_token& stop) { log_warming(warm_pool, stop); });

    server::HttpServer http(server_options, manager);
    http.start();
    spdlog::info("listening on {}://{}:{}", server_options.tls_cert.empty() ? "http" : "https",
                 server_options.host, http.port());

    const int sig = stop_signals.wait_running();
    spdlog::info("{} received: stopping (deadline {} ms)", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                 c.server.shutdown_deadline.count());
    warming.request_stop();
    {
        // Requests still running at the deadline may be blocked in agent
        // calls that take no stop token (file operations): closing every
        // sandbox's channel then makes them return, so http.stop() can
        // join its workers.
        std::jthread cut_off([&manager, deadline = c.server.shutdown_deadline](const std::stop_token& st) {
            std::mutex m;
            std::unique_lock lock(m);
            std::condition_variable_any cv;
            if (!cv.wait_for(lock, st, deadline, [] { return false; })) {
                if (!st.stop_requested()) manager.shutdown();
            }
        });
        http.stop(c.server.shutdown_deadline);
    }
    stack.shutdown();
    spdlog::info("stopped: every VM destroyed");
    return 0;
}

}  // namespace

int serve(std::span<char*> args) {
    config::LoadResult loaded;
    try {
        std::vector<std::string> argv(args.begin(), args.end());
        loaded = config::load(argv, config::environment_from(environ));
    } catch (const config::ConfigError& e) {
        for (const auto& p : e.problems()) std::fprintf(stderr, "forkvm serve: %s\n", p.to_string().c_str());
        return 2;
    }
    if (loaded.show_help) {
        std::printf("usage: forkvm serve [--config FILE] [--print-config] [--KEY VALUE]...\n\n%s",
                    config::help_text().c_str());
        return 0;
    }
    if (loaded.print_config) {
        std::printf("%s\n", config::to_json(loaded.config, true).c_str());
        return 0;
    }
    try {
        return serve_main(loaded);
    } catch (const pool::ServiceError& e) {
        spdlog::error("forkvm serve: {}{}", e.field() ? *e.field() + ": " : "", e.what());
        return 1;
    } catch (const std::exception& e) {
        spdlog::error("forkvm serve: {}", e.what());
        return 1;
    }
}

}  // namespace forkvm::cli
