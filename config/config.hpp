#pragma once
// forkvm's runtime configuration: one validated struct merged from the JSON
// config file, FORKVM_* environment variables and command-line flags
// (flags > env > file > defaults). Every key is declared once, in
// config/key_table.cpp; parsing, validation, --help, --print-config and
// docs/configuration.md are all driven from that table.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace forkvm::config {

struct ServerConfig {
    std::string listen;
    int threads = 1;
    int max_connections = 0;
    std::uint64_t max_header_bytes = 0;
    std::uint64_t max_body_bytes = 0;    // JSON request bodies
    std::uint64_t max_upload_bytes = 0;  // file uploads
    std::uint64_t max_import_bytes = 0;  // snapshot imports (spooled to disk)
    std::chrono::milliseconds read_timeout{0};
    std::chrono::milliseconds write_timeout{0};
    std::chrono::milliseconds shutdown_deadline{0};
    std::string tls_cert;  // empty = plain HTTP
    std::string tls_key;
    std::string user;  // empty = keep the uid the server was started with
    bool operator==(const ServerConfig&) const = default;
};

struct AuthConfig {
    std::vector<std::string> api_keys;  // secret
    std::string admin_key;              // secret; empty = /metrics is open
    int rate_limit = 0;                 // requests per second per key; 0 = no limit
    int rate_burst = 0;                 // requests a key may save up
    bool operator==(const AuthConfig&) const = default;
};

struct VmConfig {
    std::string kernel;  // empty = auto-detect
    std::string initrd;  // empty = auto-detect
    int memory_mb = 0;
    int vcpus = 0;
    std::string agent_channel;  // virtio|uart
    bool operator==(const VmConfig&) const = default;
};

struct PoolConfig {
    int min_warm = 0;
    int max_warm = 0;
    int refill_concurrency = 0;
    std::chrono::milliseconds lease_wait{0};
    bool operator==(const PoolConfig&) const = default;
};

struct SandboxConfig {
    int max_sandboxes = 0;
    int max_per_key = 0;
    std::chrono::milliseconds default_ttl{0};
    std::chrono::milliseconds max_ttl{0};
    int max_fork_count = 0;
    std::uint64_t min_free_memory = 0;  // bytes of host MemAvailable kept free
    bool operator==(const SandboxConfig&) const = default;
};

struct SnapshotConfig {
    int max_per_key = 0;
    std::uint64_t max_bytes_per_key = 0;  // allocated bytes on disk
    bool operator==(const SnapshotConfig&) const = default;
};

struct TemplateConfig {
    int max_per_key = 0;
    int max_warm_limit = 0;  // largest max_warm of one template
    bool operator==(const TemplateConfig&) const = default;
};

struct JailConfig {
    bool enabled = false;               // namespaces, empty root, own uid per VM process
    int uid_base = 0;                   // first uid (= gid) given to VM processes
    int uid_count = 0;                  // how many
    std::string seccomp;                // off|log|enforce
    std::uint64_t memory_overhead = 0;  // per-VM cgroup memory limit = guest memory + this
    int max_processes = 0;              // per-VM cgroup task limit
    int cpu_quota_percent = 0;          // per-VM CPU quota, % of one CPU; 0 = fair share only
    bool operator==(const JailConfig&) const = default;
};

struct EgressConfig {
    std::vector<std::string> hosts;  // "name=address": the egress proxy's only name resolution
    bool operator==(const EgressConfig&) const = default;
};

struct LogConfig {
    std::string level;   // trace|debug|info|warn|error
    std::string format;  // text|json
    bool operator==(const LogConfig&) const = default;
};

struct Config {
    ServerConfig server;
    AuthConfig auth;
    VmConfig vm;
    PoolConfig pool;
    SandboxConfig sandbox;
    SnapshotConfig snapshot;
    TemplateConfig template_;  // "template" in files, env and flags
    JailConfig jail;
    EgressConfig egress;
    std::string data_dir;
    LogConfig log;
    bool operator==(const Config&) const = default;
};

// One thing wrong with the configuration.
struct Problem {
    std::string subject;  // "pool.max_warm = 1", or an unknown name such as "--max-wram"
    std::string source;   // "FORKVM_POOL_MAX_WARM", "--listen", "config file /etc/forkvm.json", "default"
    std::string message;  // "must be >= pool.min_warm (2)"
    std::string to_string() const;  // "<subject> (from <source>): <message>"
};

// Thrown by load(): lists every problem found, not just the first.
class ConfigError : public std::runtime_error {
public:
    explicit ConfigError(std::vector<Problem> problems);
    const std::vector<Problem>& problems() const noexcept { return problems_; }

private:
    std::vector<Problem> problems_;
};

// Injectable environment: tests pass a map, production environment_from(environ).
using Environment = std::map<std::string, std::string, std::less<>>;
Environment environment_from(const char* const* envp);

struct LoadResult {
    Config config;
    bool print_config = false;  // --print-config was given
    // --help/-h was given: config holds the defaults and nothing was validated,
    // so help works even when the configuration is broken.
    bool show_help = false;
    std::string config_file;  // the file that was read, empty if none
};

// Upper bound on the config file, so a wrong --config (a disk image, /dev/zero)
// fails fast instead of being read into memory.
inline constexpr std::size_t max_config_file_bytes = 1 << 20;

// args are the arguments after the subcommand ("forkvm serve <args...>").
// Recognised besides the key flags: --config PATH (or env FORKVM_CONFIG),
// --print-config, --help/-h. Flags take "--flag value" or "--flag=value".
// Throws ConfigError.
LoadResult load(const std::vector<std::string>& args, const Environment& env);

// Same, with argv[0] (the program/subcommand name) skipped.
LoadResult load(int argc, const char* const* argv, const Environment& env);

// Same, but the config file's contents are given directly instead of read
// from --config / FORKVM_CONFIG (for tests and the fuzzer). file_label names
// the file in error messages.
LoadResult load_with_file_text(std::string_view file_text, const Environment& env,
                               const std::vector<std::string>& args = {},
                               std::string_view file_label = "config file");

// The effective configuration as JSON, nested by dotted key name, in the
// file format (so the output can be fed back as --config). With mask_secrets,
// secret values print as "***" (the API key list as "*** (N keys)").
std::string to_json(const Config& config, bool mask_secrets);

// --help text generated from the key table.
std::string help_text();

// The Markdown key table embedded in docs/configuration.md.
std::string markdown_table();

}  // namespace forkvm::config
