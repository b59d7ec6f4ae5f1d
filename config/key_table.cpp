#include "config/key_table.hpp"

#include <algorithm>
#include <array>
#include <thread>

#include "config/value_parse.hpp"

namespace forkvm::config {

namespace {

using namespace std::string_view_literals;

constexpr std::int64_t KiB = 1024;
constexpr std::int64_t MiB = 1024 * KiB;
constexpr std::int64_t GiB = 1024 * MiB;
constexpr std::int64_t second = 1000;
constexpr std::int64_t minute = 60 * second;
constexpr std::int64_t hour = 60 * minute;
constexpr std::int64_t day = 24 * hour;

constexpr std::array listen_aliases = {"FORKVM_LISTEN"sv};
constexpr std::array api_keys_aliases = {"FORKVM_API_KEYS"sv};
constexpr std::array admin_key_aliases = {"FORKVM_ADMIN_KEY"sv};
constexpr std::array seccomp_modes = {"enforce"sv, "log"sv, "off"sv};
constexpr std::array agent_channels = {"virtio"sv, "uart"sv};
constexpr std::array log_levels = {"trace"sv, "debug"sv, "info"sv, "warn"sv, "error"sv};
constexpr std::array log_formats = {"text"sv, "json"sv};

// API keys are bearer secrets: short ones are guessable.
constexpr std::size_t min_secret_length = 16;

std::string hardware_threads() {
    const unsigned n = std::thread::hardware_concurrency();
    return std::to_string(std::clamp(n, 1U, 256U));
}

#define FORKVM_FIELD(member)   \
    +[](Config & c) -> auto& { \
        return c.member;       \
    }

const std::vector<KeySpec>& table() {
    static const std::vector<KeySpec> keys = {
        // --- server ---------------------------------------------------------
        {.name = "server.listen",
         .env = "FORKVM_SERVER_LISTEN",
         .aliases = listen_aliases,
         .flag = "--listen",
         .type = KeyType::host_port,
         .default_value = "127.0.0.1:8080",
         .help = "Address and port the HTTP API listens on",
         .field = FORKVM_FIELD(server.listen)},
        {.name = "server.threads",
         .env = "FORKVM_SERVER_THREADS",
         .flag = "--threads",
         .type = KeyType::integer,
         .default_doc = "hardware concurrency",
         .computed_default = hardware_threads,
         .help = "Worker threads serving HTTP",
         .field = FORKVM_FIELD(server.threads),
         .min = 1,
         .max = 256},
        {.name = "server.max_connections",
         .env = "FORKVM_SERVER_MAX_CONNECTIONS",
         .flag = "--max-connections",
         .type = KeyType::integer,
         .default_value = "1024",
         .help = "Concurrent client connections accepted",
         .field = FORKVM_FIELD(server.max_connections),
         .min = 1,
         .max = 1'000'000},
        {.name = "server.max_header_bytes",
         .env = "FORKVM_SERVER_MAX_HEADER_BYTES",
         .flag = "--max-header-bytes",
         .type = KeyType::size,
         .default_value = "16KiB",
         .help = "Largest request header block",
         .field = FORKVM_FIELD(server.max_header_bytes),
         .min = 1 * KiB,
         .max = 1 * MiB},
        {.name = "server.max_body_bytes",
         .env = "FORKVM_SERVER_MAX_BODY_BYTES",
         .flag = "--max-body-bytes",
         .type = KeyType::size,
         .default_value = "1MiB",
         .help = "Largest JSON request body",
         .field = FORKVM_FIELD(server.max_body_bytes),
         .min = 1 * KiB,
         .max = 1 * GiB},
        {.name = "server.max_upload_bytes",
         .env = "FORKVM_SERVER_MAX_UPLOAD_BYTES",
         .flag = "--max-upload-bytes",
         .type = KeyType::size,
         .default_value = "256MiB",
         .help = "Largest file upload",
         .field = FORKVM_FIELD(server.max_upload_bytes),
         .min = 1 * KiB,
         .max = 64 * GiB},
        {.name = "server.max_import_bytes",
         .env = "FORKVM_SERVER_MAX_IMPORT_BYTES",
         .flag = "--max-import-bytes",
         .type = KeyType::size,
         .default_value = "64GiB",
         .help = "Largest snapshot import (compressed), spooled to disk under data_dir/spool",
         .field = FORKVM_FIELD(server.max_import_bytes),
         .min = 1 * MiB,
         .max = 1024 * 1024 * GiB},
        {.name = "server.read_timeout",
         .env = "FORKVM_SERVER_READ_TIMEOUT",
         .flag = "--read-timeout",
         .type = KeyType::duration,
         .default_value = "30s",
         .help = "Time allowed to read one request",
         .field = FORKVM_FIELD(server.read_timeout),
         .min = 1,
         .max = 1 * hour},
        {.name = "server.write_timeout",
         .env = "FORKVM_SERVER_WRITE_TIMEOUT",
         .flag = "--write-timeout",
         .type = KeyType::duration,
         .default_value = "30s",
         .help = "Time allowed to write one response",
         .field = FORKVM_FIELD(server.write_timeout),
         .min = 1,
         .max = 1 * hour},
        {.name = "server.shutdown_deadline",
         .env = "FORKVM_SERVER_SHUTDOWN_DEADLINE",
         .flag = "--shutdown-deadline",
         .type = KeyType::duration,
         .default_value = "10s",
         .help = "Grace period for in-flight requests on SIGTERM",
         .field = FORKVM_FIELD(server.shutdown_deadline),
         .min = 0,
         .max = 10 * minute},
        {.name = "server.tls_cert",
         .env = "FORKVM_SERVER_TLS_CERT",
         .flag = "--tls-cert",
         .type = KeyType::path,
         .help = "PEM certificate chain; enables HTTPS (needs server.tls_key)",
         .field = FORKVM_FIELD(server.tls_cert),
         .must_exist = true},
        {.name = "server.tls_key",
         .env = "FORKVM_SERVER_TLS_KEY",
         .flag = "--tls-key",
         .type = KeyType::path,
         .help = "PEM private key for server.tls_cert",
         .field = FORKVM_FIELD(server.tls_key),
         .must_exist = true},
        {.name = "server.user",
         .env = "FORKVM_SERVER_USER",
         .flag = "--user",
         .type = KeyType::string,
         .help = "User (name or uid) the server drops to after start-up as root, keeping only the "
                 "capabilities that jail VM processes; empty = stay as started (docs/security.md)",
         .field = FORKVM_FIELD(server.user)},
        // --- auth -----------------------------------------------------------
        {.name = "auth.api_keys",
         .env = "FORKVM_AUTH_API_KEYS",
         .aliases = api_keys_aliases,
         .flag = "--api-keys",
         .type = KeyType::list,
         .secret = true,
         .help = "Accepted API keys (comma-separated, each >= 16 characters)",
         .field = FORKVM_FIELD(auth.api_keys),
         .min_item_length = min_secret_length},
        {.name = "auth.admin_key",
         .env = "FORKVM_AUTH_ADMIN_KEY",
         .aliases = admin_key_aliases,
         .flag = "--admin-key",
         .type = KeyType::string,
         .secret = true,
         .help = "Key required for /metrics when set (>= 16 characters)",
         .field = FORKVM_FIELD(auth.admin_key),
         .min_item_length = min_secret_length},
        // --- vm -------------------------------------------------------------
        {.name = "auth.rate_limit",
         .env = "FORKVM_AUTH_RATE_LIMIT",
         .flag = "--rate-limit",
         .type = KeyType::integer,
         .default_value = "1000",
         .help = "Requests per second one API key may make (429 + Retry-After beyond; 0 = no limit)",
         .field = FORKVM_FIELD(auth.rate_limit),
         .min = 0,
         .max = 1000000},
        {.name = "auth.rate_burst",
         .env = "FORKVM_AUTH_RATE_BURST",
         .flag = "--rate-burst",
         .type = KeyType::integer,
         .default_value = "2000",
         .help = "Requests above auth.rate_limit one API key may make in a burst",
         .field = FORKVM_FIELD(auth.rate_burst),
         .min = 1,
         .max = 1000000},
        {.name = "vm.kernel",
         .env = "FORKVM_VM_KERNEL",
         .flag = "--kernel",
         .type = KeyType::path,
         .help = "Guest kernel image (empty = auto-detect)",
         .field = FORKVM_FIELD(vm.kernel),
         .must_exist = true},
        {.name = "vm.initrd",
         .env = "FORKVM_VM_INITRD",
         .flag = "--initrd",
         .type = KeyType::path,
         .help = "Guest initramfs (empty = auto-detect)",
         .field = FORKVM_FIELD(vm.initrd),
         .must_exist = true},
        {.name = "vm.memory_mb",
         .env = "FORKVM_VM_MEMORY_MB",
         .flag = "--memory-mb",
         .type = KeyType::integer,
         .default_value = "256",
         .help = "Guest memory per VM in MiB",
         .field = FORKVM_FIELD(vm.memory_mb),
         .min = 64,
         .max = 65536},
        {.name = "vm.vcpus",
         .env = "FORKVM_VM_VCPUS",
         .flag = "--vcpus",
         .type = KeyType::integer,
         .default_value = "1",
         .help = "vCPUs per VM",
         .field = FORKVM_FIELD(vm.vcpus),
         .min = 1,
         .max = 64},
        {.name = "vm.agent_channel",
         .env = "FORKVM_VM_AGENT_CHANNEL",
         .flag = "--agent-channel",
         .type = KeyType::choice,
         .default_value = "virtio",
         .help = "Device the guest agent talks on: virtio (a virtio console on PCI: a page per VM exit) or "
                 "uart (COM2: a VM exit per byte; the fallback)",
         .field = FORKVM_FIELD(vm.agent_channel),
         .choices = agent_channels},
        // --- pool -----------------------------------------------------------
        {.name = "pool.min_warm",
         .env = "FORKVM_POOL_MIN_WARM",
         .flag = "--min-warm",
         .type = KeyType::integer,
         .default_value = "2",
         .help = "Warm VMs the pool refills up to",
         .field = FORKVM_FIELD(pool.min_warm),
         .min = 0,
         .max = 1024},
        {.name = "pool.max_warm",
         .env = "FORKVM_POOL_MAX_WARM",
         .flag = "--max-warm",
         .type = KeyType::integer,
         .default_value = "8",
         .help = "Most warm VMs kept (>= pool.min_warm)",
         .field = FORKVM_FIELD(pool.max_warm),
         .min = 1,
         .max = 1024},
        {.name = "pool.refill_concurrency",
         .env = "FORKVM_POOL_REFILL_CONCURRENCY",
         .flag = "--refill-concurrency",
         .type = KeyType::integer,
         .default_value = "2",
         .help = "VMs forked in parallel when refilling",
         .field = FORKVM_FIELD(pool.refill_concurrency),
         .min = 1,
         .max = 64},
        {.name = "pool.lease_wait",
         .env = "FORKVM_POOL_LEASE_WAIT",
         .flag = "--lease-wait",
         .type = KeyType::duration,
         .default_value = "5s",
         .help = "How long a create request waits for a warm VM before 503",
         .field = FORKVM_FIELD(pool.lease_wait),
         .min = 0,
         .max = 10 * minute},
        // --- sandbox --------------------------------------------------------
        {.name = "sandbox.max_sandboxes",
         .env = "FORKVM_SANDBOX_MAX_SANDBOXES",
         .flag = "--max-sandboxes",
         .type = KeyType::integer,
         .default_value = "64",
         .help = "Live sandboxes in total",
         .field = FORKVM_FIELD(sandbox.max_sandboxes),
         .min = 1,
         .max = 100'000},
        {.name = "sandbox.max_per_key",
         .env = "FORKVM_SANDBOX_MAX_PER_KEY",
         .flag = "--max-per-key",
         .type = KeyType::integer,
         .default_value = "16",
         .help = "Live sandboxes per API key (<= sandbox.max_sandboxes)",
         .field = FORKVM_FIELD(sandbox.max_per_key),
         .min = 1,
         .max = 100'000},
        {.name = "sandbox.default_ttl",
         .env = "FORKVM_SANDBOX_DEFAULT_TTL",
         .flag = "--default-ttl",
         .type = KeyType::duration,
         .default_value = "10m",
         .help = "Sandbox lifetime when the request gives none",
         .field = FORKVM_FIELD(sandbox.default_ttl),
         .min = 1 * second,
         .max = 30 * day},
        {.name = "sandbox.max_ttl",
         .env = "FORKVM_SANDBOX_MAX_TTL",
         .flag = "--max-ttl",
         .type = KeyType::duration,
         .default_value = "24h",
         .help = "Longest sandbox lifetime a request may ask for (>= sandbox.default_ttl)",
         .field = FORKVM_FIELD(sandbox.max_ttl),
         .min = 1 * second,
         .max = 30 * day},
        {.name = "sandbox.max_fork_count",
         .env = "FORKVM_SANDBOX_MAX_FORK_COUNT",
         .flag = "--max-fork-count",
         .type = KeyType::integer,
         .default_value = "8",
         .help = "Forks one request may create from a sandbox",
         .field = FORKVM_FIELD(sandbox.max_fork_count),
         .min = 1,
         .max = 1024},
        {.name = "sandbox.min_free_memory",
         .env = "FORKVM_SANDBOX_MIN_FREE_MEMORY",
         .flag = "--min-free-memory",
         .type = KeyType::size,
         .default_value = "512MiB",
         .help = "Host MemAvailable below which new sandboxes and forks get 503 (0 = never)",
         .field = FORKVM_FIELD(sandbox.min_free_memory),
         .min = 0,
         .max = 1024 * GiB},
        // --- snapshots and templates ------------------------------------------
        {.name = "snapshot.max_per_key",
         .env = "FORKVM_SNAPSHOT_MAX_PER_KEY",
         .flag = "--max-snapshots-per-key",
         .type = KeyType::integer,
         .default_value = "10",
         .help = "Snapshots one API key may keep on disk",
         .field = FORKVM_FIELD(snapshot.max_per_key),
         .min = 1,
         .max = 100000},
        {.name = "snapshot.max_bytes_per_key",
         .env = "FORKVM_SNAPSHOT_MAX_BYTES_PER_KEY",
         .flag = "--max-snapshot-bytes-per-key",
         .type = KeyType::size,
         .default_value = "16GiB",
         .help = "Disk space one API key's snapshots may take (allocated bytes)",
         .field = FORKVM_FIELD(snapshot.max_bytes_per_key),
         .min = 1 * MiB,
         .max = 1024 * 1024 * GiB},
        {.name = "template.max_per_key",
         .env = "FORKVM_TEMPLATE_MAX_PER_KEY",
         .flag = "--max-templates-per-key",
         .type = KeyType::integer,
         .default_value = "10",
         .help = "Templates one API key may have",
         .field = FORKVM_FIELD(template_.max_per_key),
         .min = 1,
         .max = 10000},
        {.name = "template.max_warm_limit",
         .env = "FORKVM_TEMPLATE_MAX_WARM_LIMIT",
         .flag = "--template-max-warm-limit",
         .type = KeyType::integer,
         .default_value = "8",
         .help = "Largest max_warm a template's pool may ask for",
         .field = FORKVM_FIELD(template_.max_warm_limit),
         .min = 1,
         .max = 1024},
        // --- jail -----------------------------------------------------------
        {.name = "jail.enabled",
         .env = "FORKVM_JAIL_ENABLED",
         .flag = "--jail",
         .type = KeyType::boolean,
         .default_value = "true",
         .help = "Jail every VM process: own namespaces, an empty root, its own uid, no capabilities "
                 "(needs root; docs/security.md)",
         .field = FORKVM_FIELD(jail.enabled)},
        {.name = "jail.uid_base",
         .env = "FORKVM_JAIL_UID_BASE",
         .flag = "--jail-uid-base",
         .type = KeyType::integer,
         .default_value = "1000000000",
         .help = "First uid (and gid) given to jailed VM processes; use a range no user or container has",
         .field = FORKVM_FIELD(jail.uid_base),
         .min = 1,
         .max = 2000000000},
        {.name = "jail.uid_count",
         .env = "FORKVM_JAIL_UID_COUNT",
         .flag = "--jail-uid-count",
         .type = KeyType::integer,
         .default_value = "1000000",
         .help = "How many uids from jail.uid_base; one per VM process started (fork clones share theirs)",
         .field = FORKVM_FIELD(jail.uid_count),
         .min = 1,
         .max = 100000000},
        {.name = "jail.seccomp",
         .env = "FORKVM_JAIL_SECCOMP",
         .flag = "--seccomp",
         .type = KeyType::choice,
         .default_value = "enforce",
         .help = "VM process system call filter: enforce (a forbidden call ends the VM), log (the kernel "
                 "logs it and lets it run: to find missing calls), off",
         .field = FORKVM_FIELD(jail.seccomp),
         .choices = seccomp_modes},
        {.name = "jail.memory_overhead",
         .env = "FORKVM_JAIL_MEMORY_OVERHEAD",
         .flag = "--vm-memory-overhead",
         .type = KeyType::size,
         .default_value = "128MiB",
         .help = "Host memory a VM process may use beyond its guest memory (its cgroup's memory limit is the "
                 "sum; past it the kernel kills that VM alone)",
         .field = FORKVM_FIELD(jail.memory_overhead),
         .min = 16LL << 20,
         .max = 64LL << 30},
        {.name = "jail.max_processes",
         .env = "FORKVM_JAIL_MAX_PROCESSES",
         .flag = "--vm-max-processes",
         .type = KeyType::integer,
         .default_value = "64",
         .help = "Tasks (threads included) one VM process's cgroup may hold; keep it well above vm.vcpus",
         .field = FORKVM_FIELD(jail.max_processes),
         .min = 8,
         .max = 100000},
        {.name = "jail.cpu_quota_percent",
         .env = "FORKVM_JAIL_CPU_QUOTA_PERCENT",
         .flag = "--vm-cpu-quota",
         .type = KeyType::integer,
         .default_value = "0",
         .help = "Hard CPU limit of one VM process in percent of one host CPU (0 = none: every VM gets an "
                 "equal share under contention)",
         .field = FORKVM_FIELD(jail.cpu_quota_percent),
         .min = 0,
         .max = 102400},
        // --- egress ---------------------------------------------------------
        {.name = "egress.hosts",
         .env = "FORKVM_EGRESS_HOSTS",
         .flag = "--egress-hosts",
         .type = KeyType::list,
         .help = "The egress proxy's name table, entries name=address (comma-separated); it never asks DNS, "
                 "so sandboxes reach names only through this list",
         .field = FORKVM_FIELD(egress.hosts)},
        // --- top level ------------------------------------------------------
        {.name = "data_dir",
         .env = "FORKVM_DATA_DIR",
         .flag = "--data-dir",
         .type = KeyType::path,
         .default_value = "/var/lib/forkvm",
         .help = "Directory for snapshots and sandbox state (created if missing)",
         .field = FORKVM_FIELD(data_dir),
         .required = true},
        {.name = "log.level",
         .env = "FORKVM_LOG_LEVEL",
         .flag = "--log-level",
         .type = KeyType::choice,
         .default_value = "info",
         .help = "Least severe log level written",
         .field = FORKVM_FIELD(log.level),
         .choices = log_levels},
        {.name = "log.format",
         .env = "FORKVM_LOG_FORMAT",
         .flag = "--log-format",
         .type = KeyType::choice,
         .default_value = "text",
         .help = "Log line format",
         .field = FORKVM_FIELD(log.format),
         .choices = log_formats},
    };
    return keys;
}

#undef FORKVM_FIELD

template <typename Pred>
const KeySpec* find_if(Pred pred) {
    const auto& keys = table();
    const auto it = std::find_if(keys.begin(), keys.end(), pred);
    return it == keys.end() ? nullptr : &*it;
}

}  // namespace

std::span<const KeySpec> key_table() { return table(); }

const KeySpec* find_key(std::string_view dotted_name) {
    return find_if([&](const KeySpec& k) { return k.name == dotted_name; });
}

const KeySpec* find_key_by_env(std::string_view env_name) {
    return find_if([&](const KeySpec& k) {
        return k.env == env_name ||
               std::find(k.aliases.begin(), k.aliases.end(), env_name) != k.aliases.end();
    });
}

const KeySpec* find_key_by_flag(std::string_view flag) {
    return find_if([&](const KeySpec& k) { return k.flag == flag; });
}

std::string type_description(const KeySpec& key) {
    switch (key.type) {
        case KeyType::string: return "string";
        case KeyType::boolean: return "bool";
        case KeyType::integer: return "int " + std::to_string(key.min) + ".." + std::to_string(key.max);
        case KeyType::size:
            return "size " + format_size(static_cast<std::uint64_t>(key.min)) + ".." +
                   format_size(static_cast<std::uint64_t>(key.max));
        case KeyType::duration:
            return "duration " + format_duration(std::chrono::milliseconds(key.min)) + ".." +
                   format_duration(std::chrono::milliseconds(key.max));
        case KeyType::list: return "list";
        case KeyType::host_port: return "host:port";
        case KeyType::path: return key.must_exist ? "path (must exist)" : "path";
        case KeyType::choice: {
            std::string out = "one of ";
            for (std::size_t i = 0; i < key.choices.size(); ++i) {
                if (i) out += ", ";
                out += key.choices[i];
            }
            return out;
        }
    }
    return "string";
}

std::string_view documented_default(const KeySpec& key) {
    return key.default_doc.empty() ? key.default_value : key.default_doc;
}

}  // namespace forkvm::config
