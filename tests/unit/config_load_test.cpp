#include <algorithm>
#include <chrono>
#include <cstdio>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "config/config.hpp"
#include "config/key_table.hpp"

using namespace forkvm::config;
using namespace std::chrono_literals;

namespace {

const std::string key_a = "aaaaaaaaaaaaaaaaaaaa-first";
const std::string key_b = "bbbbbbbbbbbbbbbbbbbb-second";

// The problems a load reports, as "<subject> (from <source>): <message>" lines.
std::vector<std::string> problems_of(const std::function<void()>& load_call) {
    try {
        load_call();
    } catch (const ConfigError& e) {
        std::vector<std::string> lines;
        for (const Problem& p : e.problems()) lines.push_back(p.to_string());
        CHECK(!lines.empty());
        return lines;
    }
    FAIL("expected a ConfigError");
    return {};
}

bool has_line(const std::vector<std::string>& lines, const std::string& needle) {
    return std::any_of(lines.begin(), lines.end(),
                       [&](const std::string& l) { return l.find(needle) != std::string::npos; });
}

std::string joined(const std::vector<std::string>& lines) {
    std::string out;
    for (const auto& l : lines) out += l + "\n";
    return out;
}

// A temporary file removed at scope exit.
struct TempFile {
    std::filesystem::path path;
    explicit TempFile(const std::string& content, const std::string& name = "cfg.json") {
        path = std::filesystem::temp_directory_path() /
               ("forkvm_config_test_" +
                std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id())) + "_" + name);
        std::ofstream(path, std::ios::binary) << content;
    }
    ~TempFile() {
        std::error_code ec;
        std::filesystem::remove(path, ec);
    }
    TempFile(const TempFile&) = delete;
    TempFile& operator=(const TempFile&) = delete;
};

}  // namespace

TEST_CASE("config: defaults load without any input") {
    const Config c = load(std::vector<std::string>{}, Environment{}).config;
    CHECK(c.server.listen == "127.0.0.1:8080");
    const unsigned hw = std::thread::hardware_concurrency();
    CHECK(c.server.threads == static_cast<int>(std::clamp(hw, 1U, 256U)));
    CHECK(c.server.max_connections == 1024);
    CHECK(c.server.max_header_bytes == 16U * 1024);
    CHECK(c.server.max_body_bytes == 1U << 20);
    CHECK(c.server.max_upload_bytes == 256U << 20);
    CHECK(c.server.read_timeout == 30s);
    CHECK(c.server.write_timeout == 30s);
    CHECK(c.server.shutdown_deadline == 10s);
    CHECK(c.server.tls_cert.empty());
    CHECK(c.auth.api_keys.empty());
    CHECK(c.auth.admin_key.empty());
    CHECK(c.vm.kernel.empty());
    CHECK(c.vm.memory_mb == 256);
    CHECK(c.vm.vcpus == 1);
    CHECK(c.pool.min_warm == 2);
    CHECK(c.pool.max_warm == 8);
    CHECK(c.pool.refill_concurrency == 2);
    CHECK(c.pool.lease_wait == 5s);
    CHECK(c.sandbox.max_sandboxes == 64);
    CHECK(c.sandbox.max_per_key == 16);
    CHECK(c.sandbox.default_ttl == 10min);
    CHECK(c.sandbox.max_ttl == 24h);
    CHECK(c.sandbox.max_fork_count == 8);
    CHECK(c.data_dir == "/var/lib/forkvm");
    CHECK(c.log.level == "info");
    CHECK(c.log.format == "text");
}

TEST_CASE("config: flags beat environment beat file beat defaults") {
    const std::string file =
        R"({"pool": {"min_warm": 3, "max_warm": 20}, "server": {"listen": "10.0.0.1:1"}})";
    const Environment env = {{"FORKVM_POOL_MIN_WARM", "4"}, {"FORKVM_LISTEN", "10.0.0.2:2"}};
    const std::vector<std::string> flags = {"--min-warm", "5", "--listen=10.0.0.3:3"};

    auto c = load_with_file_text(file, env, flags).config;
    CHECK(c.pool.min_warm == 5);
    CHECK(c.server.listen == "10.0.0.3:3");
    CHECK(c.pool.max_warm == 20);  // only the file sets it

    c = load_with_file_text(file, env, {}).config;
    CHECK(c.pool.min_warm == 4);
    CHECK(c.server.listen == "10.0.0.2:2");

    c = load_with_file_text(file, {}, {}).config;
    CHECK(c.pool.min_warm == 3);
    CHECK(c.server.listen == "10.0.0.1:1");

    c = load_with_file_text("{}", {}, {}).config;
    CHECK(c.pool.min_warm == 2);
}

TEST_CASE("config: values of each type land in the typed fields") {
    const Environment env = {
        {"FORKVM_SERVER_MAX_BODY_BYTES", "2MiB"},   {"FORKVM_SERVER_READ_TIMEOUT", "500ms"},
        {"FORKVM_API_KEYS", key_a + " , " + key_b}, {"FORKVM_LOG_LEVEL", "debug"},
        {"FORKVM_DATA_DIR", "/tmp/forkvm-data"},
    };
    const auto c = load_with_file_text(R"({"server": {"max_upload_bytes": 2048, "write_timeout": "1m"},
                                           "sandbox": {"max_ttl": 7200000}, "log": {"format": "json"},
                                           "auth": {"admin_key": "admin-admin-admin-admin"}})",
                                       env, {"--threads=3", "--max-header-bytes", "32k"})
                       .config;
    CHECK(c.server.max_body_bytes == 2U << 20);
    CHECK(c.server.read_timeout == 500ms);
    CHECK(c.auth.api_keys == std::vector<std::string>{key_a, key_b});
    CHECK(c.auth.admin_key == "admin-admin-admin-admin");
    CHECK(c.log.level == "debug");
    CHECK(c.log.format == "json");
    CHECK(c.data_dir == "/tmp/forkvm-data");
    CHECK(c.server.max_upload_bytes == 2048U);
    CHECK(c.server.write_timeout == 1min);
    CHECK(c.sandbox.max_ttl == 2h);
    CHECK(c.server.threads == 3);
    CHECK(c.server.max_header_bytes == 32U * 1024);

    // API keys as a JSON array in the file.
    const auto from_file =
        load_with_file_text(R"({"auth": {"api_keys": [")" + key_a + R"(", ")" + key_b + R"("]}})", {}, {})
            .config;
    CHECK(from_file.auth.api_keys == std::vector<std::string>{key_a, key_b});
}

TEST_CASE("config: bad values name the key, the value and the source") {
    struct Case {
        std::string env_name, value, expected;
    };
    const std::vector<Case> cases = {
        {"FORKVM_SERVER_MAX_BODY_BYTES", "12XB",
         "server.max_body_bytes = 12XB (from FORKVM_SERVER_MAX_BODY_BYTES): unknown size unit"},
        {"FORKVM_SERVER_MAX_BODY_BYTES", "-1",
         "server.max_body_bytes = -1 (from FORKVM_SERVER_MAX_BODY_BYTES): must not be negative"},
        {"FORKVM_SERVER_MAX_BODY_BYTES", "1e3",
         "server.max_body_bytes = 1e3 (from FORKVM_SERVER_MAX_BODY_BYTES)"},
        {"FORKVM_SERVER_MAX_BODY_BYTES", "",
         "server.max_body_bytes = \"\" (from FORKVM_SERVER_MAX_BODY_BYTES): empty value"},
        {"FORKVM_SERVER_MAX_BODY_BYTES", "99999999999999999999",
         "(from FORKVM_SERVER_MAX_BODY_BYTES): number too large"},
        {"FORKVM_SERVER_MAX_BODY_BYTES", "2GiB",
         "server.max_body_bytes = 2GiB (from FORKVM_SERVER_MAX_BODY_BYTES): must be between 1KiB and 1GiB"},
        {"FORKVM_SERVER_THREADS", "0",
         "server.threads = 0 (from FORKVM_SERVER_THREADS): must be between 1 and 256"},
        {"FORKVM_SERVER_THREADS", "1e3", "server.threads = 1e3 (from FORKVM_SERVER_THREADS): not an integer"},
        {"FORKVM_SERVER_THREADS", "-1",
         "server.threads = -1 (from FORKVM_SERVER_THREADS): must be between 1 and 256"},
        {"FORKVM_SERVER_THREADS", "99999999999999999999",
         "server.threads = 99999999999999999999 (from FORKVM_SERVER_THREADS): number too large"},
        {"FORKVM_SERVER_THREADS", "", "server.threads = \"\" (from FORKVM_SERVER_THREADS): empty value"},
        {"FORKVM_SERVER_READ_TIMEOUT", "5x",
         "server.read_timeout = 5x (from FORKVM_SERVER_READ_TIMEOUT): unknown duration unit"},
        {"FORKVM_SERVER_READ_TIMEOUT", "0",
         "server.read_timeout = 0 (from FORKVM_SERVER_READ_TIMEOUT): must be between 1ms and 1h"},
        {"FORKVM_SERVER_READ_TIMEOUT", "-1s", "(from FORKVM_SERVER_READ_TIMEOUT): must not be negative"},
        {"FORKVM_LISTEN", "nonsense", "server.listen = nonsense (from FORKVM_LISTEN): expected host:port"},
        {"FORKVM_SERVER_LISTEN", "host:99999",
         "server.listen = host:99999 (from FORKVM_SERVER_LISTEN): port must be"},
        {"FORKVM_LOG_LEVEL", "verbose",
         "log.level = verbose (from FORKVM_LOG_LEVEL): must be one of trace, debug, info, warn, error"},
        {"FORKVM_VM_KERNEL", "/nonexistent/vmlinux",
         "vm.kernel = /nonexistent/vmlinux (from FORKVM_VM_KERNEL): no such file"},
        {"FORKVM_VM_INITRD", "/tmp", "vm.initrd = /tmp (from FORKVM_VM_INITRD): not a regular file"},
        {"FORKVM_DATA_DIR", "", "data_dir = \"\" (from FORKVM_DATA_DIR): must not be empty"},
        {"FORKVM_API_KEYS", "short",
         "auth.api_keys = *** (from FORKVM_API_KEYS): every item must be at least 16 characters"},
        {"FORKVM_API_KEYS", key_a + "," + key_a,
         "auth.api_keys = *** (from FORKVM_API_KEYS): contains a duplicate item"},
        {"FORKVM_ADMIN_KEY", "tooshort",
         "auth.admin_key = *** (from FORKVM_ADMIN_KEY): must be at least 16 characters"},
    };
    for (const Case& c : cases) {
        CAPTURE(c.env_name);
        CAPTURE(c.value);
        const auto lines = problems_of([&] { load_with_file_text("{}", {{c.env_name, c.value}}, {}); });
        CHECK_MESSAGE(has_line(lines, c.expected), joined(lines));
        CHECK(lines.size() == 1);
    }
}

TEST_CASE("config: a bad value from a flag names the flag") {
    const auto lines = problems_of([] { load({"--vcpus", "65"}, {}); });
    REQUIRE(lines.size() == 1);
    CHECK(lines[0] == "vm.vcpus = 65 (from --vcpus): must be between 1 and 64");
}

TEST_CASE("config: file values of the wrong JSON type are rejected") {
    auto lines = problems_of([] {
        load_with_file_text(R"({"vm": {"memory_mb": 1e3, "vcpus": "2"}, "log": {"level": 3},
                                "server": {"read_timeout": 1.5, "listen": null}, "auth": {"api_keys": [1, 2]}})",
                            {}, {}, "test.json");
    });
    CHECK(lines.size() == 6);
    CHECK(has_line(lines,
                   "vm.memory_mb = 1000.0 (from test.json): wrong JSON type number, expected an integer"));
    CHECK(has_line(lines,
                   "vm.vcpus = \"\\\"2\\\"\" (from test.json): wrong JSON type string, expected an integer"));
    CHECK(has_line(lines, "log.level = 3 (from test.json): wrong JSON type number, expected a string"));
    CHECK(has_line(lines, "server.read_timeout = 1.5 (from test.json)"));
    CHECK(has_line(lines, "server.listen = null (from test.json)"));
    CHECK(has_line(lines, "auth.api_keys = *** (from test.json): wrong JSON type array"));

    // Deeply nested values are reported without being serialised (which would recurse).
    const std::string deep =
        "{\"log\": {\"level\": " + std::string(100000, '[') + std::string(100000, ']') + "}}";
    lines = problems_of([&] { load_with_file_text(deep, {}, {}, "deep.json"); });
    CHECK(lines == std::vector<std::string>{
                       "log.level = [...] (from deep.json): wrong JSON type array, expected a string"});
}

TEST_CASE("config: all problems are reported at once") {
    const Environment env = {{"FORKVM_VM_VCPUS", "0"}, {"FORKVM_POOL_MAX_WRAM", "3"}};
    const auto lines = problems_of([&] {
        load_with_file_text(R"({"server": {"threads": 0, "lisen": "x"}, "log": {"level": "loud"}})", env,
                            {"--memory-mb", "1", "--bogus", "positional"});
    });
    CHECK_MESSAGE(lines.size() == 8, joined(lines));
    CHECK(has_line(lines, "\"positional\" (from command line): unexpected argument"));
    CHECK(has_line(lines, "server.threads = 0"));
    CHECK(has_line(lines, "server.lisen (from config file): unknown key; did you mean server.listen?"));
    CHECK(has_line(lines, "log.level = loud"));
    CHECK(has_line(lines, "vm.vcpus = 0 (from FORKVM_VM_VCPUS)"));
    CHECK(has_line(
        lines,
        "FORKVM_POOL_MAX_WRAM (from environment): unknown variable; did you mean FORKVM_POOL_MAX_WARM?"));
    CHECK(has_line(lines, "vm.memory_mb = 1 (from --memory-mb)"));
    CHECK(has_line(lines, "\"--bogus\" (from command line): unknown flag"));
    // The summary in what() lists them too.
    try {
        load_with_file_text("{}", env, {});
    } catch (const ConfigError& e) {
        CHECK(std::string(e.what()).find("FORKVM_POOL_MAX_WRAM") != std::string::npos);
    }
}

TEST_CASE("config: unknown keys, variables and flags are errors with suggestions") {
    auto lines = problems_of([] { load_with_file_text(R"({"pool": {"max_wram": 3}})", {}, {}); });
    CHECK(lines == std::vector<std::string>{
                       "pool.max_wram (from config file): unknown key; did you mean pool.max_warm?"});

    lines = problems_of([] { load_with_file_text(R"({"nothing_like_it": {"x": 1}})", {}, {}); });
    CHECK(lines == std::vector<std::string>{"nothing_like_it (from config file): unknown key"});

    lines = problems_of([] { load_with_file_text(R"({"pool": 3})", {}, {}); });
    CHECK(has_line(lines, "pool (from config file): must be a JSON object"));

    lines = problems_of([] { load_with_file_text(R"({"pool.min_warm": 3})", {}, {}); });
    CHECK(has_line(lines, "bad key name"));

    lines = problems_of([] { load({}, {{"FORKVM_LISTN", "1.2.3.4:5"}}); });
    CHECK(lines == std::vector<std::string>{
                       "FORKVM_LISTN (from environment): unknown variable; did you mean FORKVM_LISTEN?"});

    lines = problems_of([] { load({"--max-wram=4"}, {}); });
    CHECK(lines == std::vector<std::string>{
                       "\"--max-wram\" (from command line): unknown flag; did you mean --max-warm?"});

    lines = problems_of([] { load({"--listen"}, {}); });
    CHECK(lines == std::vector<std::string>{"--listen (from command line): missing value"});

    lines = problems_of([] { load({"--listen", "--threads", "2"}, {}); });
    CHECK(lines == std::vector<std::string>{"--listen (from command line): missing value"});
}

TEST_CASE("config: non-config variables are left alone") {
    const Environment env = {{"PATH", "/bin"},
                             {"FORKVM_WITH_KVM_DEBUG", "1"},
                             {"FORKVM_TEST_SCALE", "2"},
                             {"forkvm_pool_min_warm", "99"}};
    CHECK(load({}, env).config.pool.min_warm == 2);
}

TEST_CASE("config: canonical variable and alias must agree") {
    CHECK(load({}, {{"FORKVM_LISTEN", "1.2.3.4:5"}, {"FORKVM_SERVER_LISTEN", "1.2.3.4:5"}})
              .config.server.listen == "1.2.3.4:5");
    const auto lines = problems_of([] {
        load({}, {{"FORKVM_LISTEN", "1.2.3.4:5"}, {"FORKVM_SERVER_LISTEN", "1.2.3.4:6"}});
    });
    CHECK(has_line(lines,
                   "server.listen (from FORKVM_SERVER_LISTEN and FORKVM_LISTEN): set to different values"));
}

TEST_CASE("config: malformed JSON is reported with line and column") {
    auto lines = problems_of(
        [] { load_with_file_text("{\n  \"pool\": {\n    \"min_warm\": 2,\n  }\n}", {}, {}, "f.json"); });
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].starts_with("config file (from f.json): malformed JSON: parse error at line 4, column 3"));

    lines = problems_of([] { load_with_file_text("", {}, {}, "f.json"); });
    CHECK(has_line(lines, "malformed JSON: parse error at line 1, column 1"));

    lines = problems_of([] { load_with_file_text("[1, 2]", {}, {}, "f.json"); });
    CHECK(has_line(lines, "must contain a JSON object"));

    lines = problems_of([] { load_with_file_text("{\"a\": \"\xff\"}", {}, {}, "f.json"); });
    CHECK(has_line(lines, "malformed JSON"));

    // A number too large even for a double is an out_of_range error in nlohmann, not a parse error.
    lines = problems_of(
        [] { load_with_file_text(R"({"server": {"max_upload_bytes": 1E99999}})", {}, {}, "f.json"); });
    CHECK(has_line(lines, "config file (from f.json): malformed JSON: number overflow"));
}

TEST_CASE("config: cross-key rules are checked after merging") {
    auto lines = problems_of([] { load({}, {{"FORKVM_POOL_MAX_WARM", "1"}}); });
    CHECK(lines == std::vector<std::string>{
                       "pool.max_warm = 1 (from FORKVM_POOL_MAX_WARM): must be >= pool.min_warm (2)"});

    // Satisfied after merge although the file alone violates it.
    CHECK(load_with_file_text(R"({"pool": {"min_warm": 10}})", {{"FORKVM_POOL_MAX_WARM", "12"}}, {})
              .config.pool.max_warm == 12);

    lines = problems_of([] { load({"--default-ttl", "2d"}, {{"FORKVM_SANDBOX_MAX_TTL", "1d"}}); });
    CHECK(lines == std::vector<std::string>{"sandbox.max_ttl = 1d (from FORKVM_SANDBOX_MAX_TTL): must be >= "
                                            "sandbox.default_ttl (2d, from --default-ttl)"});

    lines = problems_of([] { load({"--max-sandboxes", "4"}, {}); });
    CHECK(has_line(lines,
                   "sandbox.max_sandboxes = 4 (from --max-sandboxes): must be >= sandbox.max_per_key (16)"));

    // A key that is itself invalid does not also produce a cross-key complaint.
    lines = problems_of([] { load({"--max-warm", "x"}, {}); });
    CHECK(lines.size() == 1);
}

TEST_CASE("config: TLS certificate and key are both set or neither") {
    const TempFile cert("cert", "cert.pem");
    const TempFile key("key", "key.pem");
    auto c = load({"--tls-cert", cert.path.string(), "--tls-key", key.path.string()}, {}).config;
    CHECK(c.server.tls_cert == cert.path.string());
    CHECK(c.server.tls_key == key.path.string());

    auto lines = problems_of([&] { load({"--tls-cert", cert.path.string()}, {}); });
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].starts_with("server.tls_key = \"\" (from default): must be set when server.tls_cert ("));

    lines = problems_of([&] { load({}, {{"FORKVM_SERVER_TLS_KEY", key.path.string()}}); });
    REQUIRE(lines.size() == 1);
    CHECK(lines[0].starts_with("server.tls_cert = \"\" (from default): must be set when server.tls_key ("));
}

TEST_CASE("config: --config and FORKVM_CONFIG read the file from disk") {
    const TempFile file(R"({"vm": {"vcpus": 4}})");
    auto r = load({"--config", file.path.string()}, {});
    CHECK(r.config.vm.vcpus == 4);
    CHECK(r.config_file == file.path.string());
    CHECK(load({}, {{"FORKVM_CONFIG", file.path.string()}}).config.vm.vcpus == 4);

    auto lines = problems_of([] { load({"--config=/nonexistent/forkvm.json"}, {}); });
    CHECK(lines == std::vector<std::string>{
                       "config file \"/nonexistent/forkvm.json\" (from --config): cannot be opened"});

    const TempFile bad(R"({"vm": {"vcpus": 100}})", "bad.json");
    lines = problems_of([&] { load({"--config", bad.path.string()}, {}); });
    CHECK(has_line(lines, "vm.vcpus = 100 (from config file \"" + bad.path.string() + "\")"));

    const TempFile huge(std::string(max_config_file_bytes + 10, ' '), "huge.json");
    lines = problems_of([&] { load({"--config", huge.path.string()}, {}); });
    CHECK(has_line(lines, "larger than 1MiB"));
}

TEST_CASE("config: --help and --print-config are reported, help even with a broken config") {
    auto r = load({"--help", "--bogus"}, {{"FORKVM_VM_VCPUS", "999"}});
    CHECK(r.show_help);
    CHECK(r.config.vm.vcpus == 1);
    CHECK(load({"-h"}, {}).show_help);
    r = load({"--print-config"}, {});
    CHECK(r.print_config);
    CHECK(!r.show_help);
    CHECK(!load({}, {}).print_config);
    const std::string help = help_text();
    for (const KeySpec& key : key_table()) {
        CHECK(help.find(std::string(key.flag) + " ") != std::string::npos);
        CHECK(help.find(std::string(key.env)) != std::string::npos);
    }
}

TEST_CASE("config: printed config masks every secret") {
    const auto c =
        load({"--admin-key", "admin-secret-value-123"}, {{"FORKVM_API_KEYS", key_a + "," + key_b}}).config;
    const std::string printed = to_json(c, true);
    CHECK(printed.find(key_a) == std::string::npos);
    CHECK(printed.find(key_b) == std::string::npos);
    CHECK(printed.find("aaaaaaaa") == std::string::npos);
    CHECK(printed.find("admin-secret") == std::string::npos);
    const auto j = nlohmann::json::parse(printed);
    CHECK(j["auth"]["api_keys"] == "*** (2 keys)");
    CHECK(j["auth"]["admin_key"] == "***");
    CHECK(j["server"]["listen"] == "127.0.0.1:8080");
    CHECK(j["server"]["max_body_bytes"] == "1MiB");
    CHECK(j["sandbox"]["default_ttl"] == "10m");
    CHECK(j["pool"]["min_warm"] == 2);
    CHECK(j["data_dir"] == "/var/lib/forkvm");

    // Unmasked output has them (for the round trip), masked output fed back is refused.
    CHECK(to_json(c, false).find(key_a) != std::string::npos);
    const auto lines = problems_of([&] { load_with_file_text(printed, {}, {}); });
    CHECK(lines.size() == 2);
    CHECK(has_line(lines,
                   "auth.api_keys = *** (from config file): is the masked value printed by --print-config"));
    CHECK(has_line(lines,
                   "auth.admin_key = *** (from config file): is the masked value printed by --print-config"));
}

TEST_CASE("config: print then load gives the same config") {
    const TempFile cert("c", "rt_cert.pem");
    const TempFile key("k", "rt_key.pem");
    const auto original =
        load({"--threads", "7", "--max-upload-bytes", "1500", "--read-timeout", "1234", "--tls-cert",
              cert.path.string(), "--tls-key", key.path.string(), "--log-format", "json", "--max-ttl", "3d",
              "--min-warm", "0"},
             {{"FORKVM_API_KEYS", key_a + "," + key_b}, {"FORKVM_ADMIN_KEY", "admin-admin-admin-1"}})
            .config;
    const std::string printed = to_json(original, false);
    const auto reloaded = load_with_file_text(printed, {}, {}).config;
    CHECK(reloaded == original);
    CHECK(to_json(reloaded, false) == printed);
    // And the defaults round-trip too.
    const auto defaults = load({}, {}).config;
    CHECK(load_with_file_text(to_json(defaults, false), {}, {}).config == defaults);
}

TEST_CASE("config: every table key has a unique name, env and flag, and a valid default") {
    std::vector<std::string_view> names, envs, flags;
    for (const KeySpec& key : key_table()) {
        names.push_back(key.name);
        envs.push_back(key.env);
        flags.push_back(key.flag);
        CHECK(key.flag.starts_with("--"));
        CHECK(key.env.starts_with("FORKVM_"));
        CHECK(!key.help.empty());
        CHECK(find_key(key.name) == &key);
        CHECK(find_key_by_env(key.env) == &key);
        CHECK(find_key_by_flag(key.flag) == &key);
    }
    for (auto* list : {&names, &envs, &flags}) {
        std::sort(list->begin(), list->end());
        CHECK(std::adjacent_find(list->begin(), list->end()) == list->end());
    }
}
