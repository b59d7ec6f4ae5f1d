#pragma once
// Test support for the server_* tests: a scripted fake SandboxService, a
// running HttpServer on 127.0.0.1:0, and small HTTP clients (Beast for
// ordinary requests, raw sockets for misbehaving clients).

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <atomic>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <optional>
#include <spdlog/spdlog.h>
#include <string>
#include <vector>

#include "pool/sandbox_service.hpp"
#include "pool/service_error.hpp"
#include "server/auth.hpp"
#include "server/http_server.hpp"

namespace forkvm::server::test {

inline const std::string key_a = "key-alpha-0123456789";
inline const std::string key_b = "key-bravo-0123456789";
inline const std::string admin_key = "admin-secret";

// A scripted SandboxService: canned sandboxes with owners, recorded calls,
// an optional error thrown by every call, and "block" commands that wait
// for release() or their stop token.
class FakeService final : public pool::SandboxService {
public:
    std::mutex mutex;
    std::condition_variable cv;
    std::map<std::string, pool::Sandbox> sandboxes;
    std::map<std::string, std::string> files;  // path -> content (one namespace for all sandboxes)
    std::vector<std::string> calls;
    std::optional<pool::ServiceError> fail_with;
    pool::ExecCall last_exec;
    pool::CreateSandbox last_create;
    pool::ForkSandbox last_fork;
    pool::ListSandboxes last_list;
    vmm::WriteFileRequest last_write;
    bool released = false;
    bool stop_seen = false;
    int blocked = 0;
    bool is_ready = true;
    int next_id = 0;

    void release() {
        const std::lock_guard lock(mutex);
        released = true;
        cv.notify_all();
    }
    // Waits until `n` calls are blocked (or 5 s).
    bool wait_blocked(int n) {
        std::unique_lock lock(mutex);
        return cv.wait_for(lock, std::chrono::seconds(5), [&] { return blocked >= n; });
    }
    bool wait_stop_seen() {
        std::unique_lock lock(mutex);
        return cv.wait_for(lock, std::chrono::seconds(5), [&] { return stop_seen; });
    }
    std::size_t call_count(const std::string& name) {
        const std::lock_guard lock(mutex);
        return static_cast<std::size_t>(std::count(calls.begin(), calls.end(), name));
    }

    pool::Sandbox add(const std::string& owner_key, const std::string& id) {
        const std::lock_guard lock(mutex);
        return add_locked(owner_id_of(owner_key), id);
    }

    pool::Sandbox create(const std::string& owner, const pool::CreateSandbox& request) override {
        const std::lock_guard lock(mutex);
        enter("create");
        last_create = request;
        auto sandbox = add_locked(owner, "sb-" + std::string(19, 'a') + std::to_string(next_id++ % 10));
        sandbox.info.labels = request.labels;
        sandbox.env = request.env;
        sandbox.user = request.user;
        sandbox.template_name = request.template_name;
        sandboxes[sandbox.info.id] = sandbox;
        return sandbox;
    }
    pool::Sandbox get(const std::string& owner, const std::string& id) override {
        const std::lock_guard lock(mutex);
        enter("get");
        return find(owner, id);
    }
    pool::SandboxPage list(const std::string& owner, const pool::ListSandboxes& request) override {
        const std::lock_guard lock(mutex);
        enter("list");
        last_list = request;
        pool::SandboxPage page;
        for (const auto& [id, sandbox] : sandboxes) {
            if (sandbox.info.owner == owner) page.sandboxes.push_back(sandbox);
        }
        if (request.limit < page.sandboxes.size()) {
            page.sandboxes.resize(request.limit);
            page.next_page_token = "next";
        }
        return page;
    }
    void remove(const std::string& owner, const std::string& id) override {
        const std::lock_guard lock(mutex);
        enter("remove");
        find(owner, id);
        sandboxes.erase(id);
    }
    pool::Sandbox keep_alive(const std::string& owner, const std::string& id,
                             std::optional<std::chrono::milliseconds> ttl) override {
        const std::lock_guard lock(mutex);
        enter("keep_alive");
        auto sandbox = find(owner, id);
        sandbox.info.expires = sandbox.info.created + ttl.value_or(std::chrono::milliseconds(1000));
        return sandbox;
    }
    std::vector<pool::Sandbox> fork(const std::string& owner, const std::string& id,
                                    const pool::ForkSandbox& request) override {
        const std::lock_guard lock(mutex);
        enter("fork");
        find(owner, id);
        last_fork = request;
        std::vector<pool::Sandbox> out;
        for (std::size_t i = 0; i < request.count; ++i) {
            out.push_back(add_locked(owner, "sb-fork" + std::to_string(next_id++)));
        }
        return out;
    }
    std::string console_tail(const std::string& owner, const std::string& id) override {
        const std::lock_guard lock(mutex);
        enter("console");
        find(owner, id);
        return "boot ok\n\xff";
    }
    vmm::ExecResult exec(const std::string& owner, const std::string& id, const pool::ExecCall& call,
                         const vmm::ExecCallbacks& callbacks, std::stop_token stop) override {
        {
            const std::lock_guard lock(mutex);
            enter("exec");
            find(owner, id);
            last_exec = call;
        }
        callbacks.on_started(42);
        callbacks.on_stdout(bytes("first\n"));
        callbacks.on_stderr(bytes("\xff\xfe"));
        vmm::ExecResult result;
        result.pid = 42;
        result.exit_code = 0;
        if (call.argv.back() == "block") result.cancelled = block(stop);
        if (call.argv.back() == "fail-late") throw pool::ServiceError(pool::ErrorCode::vm_broken, "vm died");
        callbacks.on_stdout(bytes("last\n"));
        return result;
    }
    vmm::BufferedExecResult exec_buffered(const std::string& owner, const std::string& id,
                                          const pool::ExecCall& call, std::stop_token stop) override {
        {
            const std::lock_guard lock(mutex);
            enter("exec_buffered");
            find(owner, id);
            last_exec = call;
        }
        vmm::BufferedExecResult result;
        result.pid = 7;
        result.exit_code = 3;
        result.stdout_data = "hello\n";
        result.stderr_data = std::string("\x00\xff", 2);
        result.duration = std::chrono::microseconds(1500);
        if (call.argv.back() == "block") result.cancelled = block(stop);
        if (call.argv.back() == "signal") {
            result.exit_code = -1;
            result.term_signal = 9;
        }
        return result;
    }
    void write_file(const std::string& owner, const std::string& id, const vmm::WriteFileRequest& request,
                    std::uint64_t total_size, const vmm::DataSource& source, std::stop_token) override {
        {
            const std::lock_guard lock(mutex);
            enter("write_file");
            find(owner, id);
            last_write = request;
        }
        std::string data;
        std::vector<std::uint8_t> buffer(1000);
        while (data.size() < total_size) {
            const auto n = source(std::span(buffer.data(), buffer.size()));
            if (n == 0) throw pool::ServiceError::internal("source ended early");
            data.append(reinterpret_cast<const char*>(buffer.data()), n);
        }
        const std::lock_guard lock(mutex);
        files[request.path] = data;
    }
    vmm::ReadFileResult read_file(const std::string& owner, const std::string& id,
                                  const vmm::ReadFileRequest& request, const vmm::DataSink& sink,
                                  std::stop_token stop) override {
        std::string data;
        {
            const std::lock_guard lock(mutex);
            enter("read_file");
            find(owner, id);
            const auto it = files.find(request.path);
            if (it == files.end()) throw pool::ServiceError::not_found("no such file: " + request.path);
            data = it->second.substr(std::min<std::size_t>(request.offset, it->second.size()));
        }
        if (request.max_bytes > 0 && data.size() > request.max_bytes) data.resize(request.max_bytes);
        for (std::size_t at = 0; at < data.size(); at += 4096) {
            sink(bytes(std::string_view(data).substr(at, 4096)));
            if (at == 0 && request.path == "/block") block(stop);
        }
        return {data.size(), true};
    }
    proto::StatResult stat(const std::string& owner, const std::string& id,
                           const std::string& path) override {
        const std::lock_guard lock(mutex);
        enter("stat");
        find(owner, id);
        if (!files.contains(path)) throw pool::ServiceError::not_found("no such file: " + path);
        proto::StatResult result;
        result.size = files[path].size();
        result.mode = 0644;
        result.mtime_ns = 1'700'000'000'123'456'789;
        result.uid = 1000;
        result.gid = 1000;
        return result;
    }
    proto::DirEntries list_dir(const std::string& owner, const std::string& id, const std::string&) override {
        const std::lock_guard lock(mutex);
        enter("list_dir");
        find(owner, id);
        proto::DirEntries entries;
        entries.entries.push_back({"bin", proto::FileType::directory, 4096, 0755});
        entries.entries.push_back({"a.txt", proto::FileType::file, 3, 0600});
        return entries;
    }
    void mkdir(const std::string& owner, const std::string& id, const std::string& path, bool parents,
               std::uint32_t mode) override {
        const std::lock_guard lock(mutex);
        enter("mkdir:" + path + ":" + (parents ? "p" : "-") + ":" + std::to_string(mode));
        find(owner, id);
    }
    void move(const std::string& owner, const std::string& id, const std::string& from,
              const std::string& to) override {
        const std::lock_guard lock(mutex);
        enter("move:" + from + ">" + to);
        find(owner, id);
    }
    void remove_path(const std::string& owner, const std::string& id, const std::string& path,
                     bool recursive) override {
        const std::lock_guard lock(mutex);
        enter("remove_path:" + path + (recursive ? ":r" : ""));
        find(owner, id);
    }
    // Snapshots and templates: an in-memory catalog with the real rules that
    // matter to the HTTP layer (ownership, not_found, conflict).
    std::map<std::string, pool::SnapshotInfo> snapshots;
    std::map<std::string, pool::TemplateInfo> templates;  // by owner + "/" + name
    pool::CreateTemplate last_create_template;
    pool::UpdateTemplate last_update_template;

    pool::SnapshotInfo snapshot(const std::string& owner, const std::string& id,
                                const pool::CreateSnapshot& request) override {
        const std::lock_guard lock(mutex);
        enter("snapshot");
        find(owner, id);
        pool::SnapshotInfo info;
        info.id = "snap-00000000000000" + std::to_string(10 + next_id++ % 90);
        info.owner = owner;
        info.source_sandbox = id;
        info.labels = request.labels;
        info.created = pool::TimePoint(std::chrono::milliseconds(1'795'000'000'123));
        info.memory_bytes = 256U << 20;
        info.disk_bytes = 9U << 20;
        snapshots[info.id] = info;
        return info;
    }
    std::vector<pool::SnapshotInfo> list_snapshots(const std::string& owner) override {
        const std::lock_guard lock(mutex);
        enter("list_snapshots");
        std::vector<pool::SnapshotInfo> out;
        for (const auto& [id, info] : snapshots) {
            if (info.owner == owner) out.push_back(info);
        }
        return out;
    }
    pool::SnapshotInfo get_snapshot(const std::string& owner, const std::string& snapshot_id) override {
        const std::lock_guard lock(mutex);
        enter("get_snapshot");
        return find_snapshot(owner, snapshot_id);
    }
    void remove_snapshot(const std::string& owner, const std::string& snapshot_id) override {
        const std::lock_guard lock(mutex);
        enter("remove_snapshot");
        if (!find_snapshot(owner, snapshot_id).templates.empty()) {
            throw pool::ServiceError(pool::ErrorCode::conflict, "snapshot is used by a template");
        }
        snapshots.erase(snapshot_id);
    }
    // Export: 100 KB of a pattern naming the snapshot. Import: the body must
    // start with "FAKE-EXPORT" (else invalid_argument); its size is recorded.
    std::uint64_t last_import_size = 0;
    void export_snapshot(const std::string& owner, const std::string& snapshot_id,
                         const vmm::DataSink& sink) override {
        {
            const std::lock_guard lock(mutex);
            enter("export_snapshot");
            find_snapshot(owner, snapshot_id);
        }
        const std::string chunk = "EXPORT:" + snapshot_id + "\n";
        for (int i = 0; i < 4000; ++i) sink(bytes(chunk));
    }
    pool::SnapshotInfo import_snapshot(const std::string& owner, const vmm::DataSource& source) override {
        std::string data;
        std::vector<std::uint8_t> buffer(4096);
        while (const auto n = source(buffer)) data.append(reinterpret_cast<const char*>(buffer.data()), n);
        const std::lock_guard lock(mutex);
        enter("import_snapshot");
        last_import_size = data.size();
        if (!data.starts_with("FAKE-EXPORT")) {
            throw pool::ServiceError::invalid_argument("body", "not a valid snapshot export");
        }
        pool::SnapshotInfo info;
        info.id = "snap-10000000000000" + std::to_string(10 + next_id++ % 90);
        info.owner = owner;
        info.created = pool::TimePoint(std::chrono::milliseconds(1'795'000'000'123));
        snapshots[info.id] = info;
        return info;
    }
    pool::TemplateInfo create_template(const std::string& owner,
                                       const pool::CreateTemplate& request) override {
        const std::lock_guard lock(mutex);
        enter("create_template");
        last_create_template = request;
        auto& snapshot = snapshots.at(find_snapshot(owner, request.snapshot_id).id);
        if (templates.contains(owner + "/" + request.name)) {
            throw pool::ServiceError(pool::ErrorCode::conflict, "template exists");
        }
        pool::TemplateInfo info;
        info.name = request.name;
        info.owner = owner;
        info.snapshot_id = request.snapshot_id;
        info.pool = {request.min_warm.value_or(1), request.max_warm.value_or(2)};
        info.created = snapshot.created;
        templates[owner + "/" + request.name] = info;
        snapshot.templates.push_back(request.name);
        return info;
    }
    std::vector<pool::TemplateInfo> list_templates(const std::string& owner) override {
        const std::lock_guard lock(mutex);
        enter("list_templates");
        std::vector<pool::TemplateInfo> out;
        for (const auto& [key, info] : templates) {
            if (info.owner == owner) out.push_back(info);
        }
        return out;
    }
    pool::TemplateInfo get_template(const std::string& owner, const std::string& name) override {
        const std::lock_guard lock(mutex);
        enter("get_template");
        return find_template(owner, name);
    }
    pool::TemplateInfo update_template(const std::string& owner, const std::string& name,
                                       const pool::UpdateTemplate& request) override {
        const std::lock_guard lock(mutex);
        enter("update_template");
        last_update_template = request;
        auto& info = templates.at(owner + "/" + find_template(owner, name).name);
        info.pool.min_warm = request.min_warm.value_or(info.pool.min_warm);
        info.pool.max_warm = request.max_warm.value_or(info.pool.max_warm);
        return info;
    }
    void remove_template(const std::string& owner, const std::string& name) override {
        const std::lock_guard lock(mutex);
        enter("remove_template");
        const auto info = find_template(owner, name);
        templates.erase(owner + "/" + name);
        auto& users = snapshots.at(info.snapshot_id).templates;
        users.erase(std::remove(users.begin(), users.end(), name), users.end());
    }
    std::vector<pool::PoolInfo> pools(const std::string& owner) override {
        const std::lock_guard lock(mutex);
        enter("pools");
        std::vector<pool::PoolInfo> out;
        out.push_back(pool::PoolInfo{"", 2, 4, stats().pool});
        for (const auto& [key, info] : templates) {
            if (info.owner == owner)
                out.push_back(pool::PoolInfo{info.name, info.pool.min_warm, info.pool.max_warm, {}});
        }
        return out;
    }

    bool ready() override {
        const std::lock_guard lock(mutex);
        return is_ready;
    }
    pool::ServiceStats stats() override {
        pool::ServiceStats stats;
        stats.pool.warm = 2;
        stats.pool.leased = 1;
        stats.pool.forks = 5;
        stats.pool.lease_latency_buckets[1] = 3;
        stats.min_warm = 2;
        stats.max_warm = 4;
        stats.live_sandboxes = 1;
        stats.sandboxes_created = 9;
        return stats;
    }

private:
    static vmm::ByteView bytes(std::string_view text) {
        return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
    }
    void enter(const std::string& name) {  // requires mutex
        calls.push_back(name);
        if (fail_with) throw *fail_with;
    }
    pool::Sandbox add_locked(const std::string& owner, const std::string& id) {
        pool::Sandbox sandbox;
        sandbox.info.id = id;
        sandbox.info.owner = owner;
        sandbox.info.state = pool::SandboxState::running;
        sandbox.info.created = pool::TimePoint(std::chrono::milliseconds(1'795'000'000'123));
        sandbox.info.expires = sandbox.info.created + std::chrono::minutes(5);
        sandboxes[id] = sandbox;
        return sandbox;
    }
    pool::Sandbox find(const std::string& owner, const std::string& id) {  // requires mutex
        if (id == "sb-expired") throw pool::ServiceError(pool::ErrorCode::expired, "sandbox expired");
        const auto it = sandboxes.find(id);
        if (it == sandboxes.end() || it->second.info.owner != owner) {
            throw pool::ServiceError::not_found("no sandbox " + id);
        }
        return it->second;
    }
    pool::SnapshotInfo find_snapshot(const std::string& owner, const std::string& id) {  // requires mutex
        const auto it = snapshots.find(id);
        if (it == snapshots.end() || it->second.owner != owner)
            throw pool::ServiceError::not_found("no snapshot " + id);
        return it->second;
    }
    pool::TemplateInfo find_template(const std::string& owner, const std::string& name) {  // requires mutex
        const auto it = templates.find(owner + "/" + name);
        if (it == templates.end()) throw pool::ServiceError::not_found("no template " + name);
        return it->second;
    }
    // True when stopped by the token, false when released.
    bool block(std::stop_token stop) {
        std::unique_lock lock(mutex);
        ++blocked;
        cv.notify_all();
        std::stop_callback wake(stop, [this] {
            const std::lock_guard inner(mutex);
            cv.notify_all();
        });
        cv.wait(lock, [&] { return released || stop.stop_requested(); });
        --blocked;
        if (stop.stop_requested()) stop_seen = true;
        cv.notify_all();
        return stop.stop_requested();
    }
};

inline ServerOptions test_options() {
    ServerOptions options;
    options.host = "127.0.0.1";
    options.port = 0;
    options.io_threads = 2;
    options.max_connections = 64;
    options.max_header_bytes = 4096;
    options.max_body_bytes = 4096;
    options.max_upload_bytes = 64 * 1024;
    options.read_timeout = std::chrono::milliseconds(2000);
    options.write_timeout = std::chrono::milliseconds(2000);
    options.shutdown_deadline = std::chrono::milliseconds(2000);
    options.worker_threads = 4;
    options.worker_queue = 4;
    options.api_keys = {key_a, key_b};
    options.admin_key = admin_key;
    options.max_fork_count = 4;
    options.max_exec_output_bytes = 1000;
    options.spool_dir =
        std::filesystem::temp_directory_path().string() + "/forkvm-test-spool-" + std::to_string(::getpid());
    options.max_import_bytes = 256 * 1024;
    return options;
}

struct Reply {
    int status = 0;
    std::map<std::string, std::string> headers;  // lowercase names
    std::string body;
    nlohmann::json json() const { return nlohmann::json::parse(body, nullptr, false); }
    std::string header(const std::string& name) const {
        const auto it = headers.find(name);
        return it == headers.end() ? "" : it->second;
    }
};

// One keep-alive connection speaking HTTP/1.1 through Beast.
class Client {
public:
    explicit Client(std::uint16_t port) : socket_(ioc_) {
        socket_.connect({boost::asio::ip::make_address("127.0.0.1"), port});
    }

    Reply request(const std::string& method, const std::string& target, const std::string& body = "",
                  std::map<std::string, std::string> headers = {}, const std::string& key = key_a) {
        namespace http = boost::beast::http;
        http::request<http::string_body> req(http::string_to_verb(method), target, 11);
        req.set(http::field::host, "localhost");
        if (!key.empty()) req.set(http::field::authorization, "Bearer " + key);
        if (!body.empty() && !headers.contains("Content-Type"))
            req.set(http::field::content_type, "application/json");
        for (const auto& [name, value] : headers) req.set(name, value);
        req.body() = body;
        req.prepare_payload();
        http::write(socket_, req);
        http::response_parser<http::string_body> parser;
        parser.body_limit(64 * 1024 * 1024);
        http::read(socket_, buffer_, parser);
        Reply reply;
        const auto& res = parser.get();
        reply.status = static_cast<int>(res.result_int());
        for (const auto& field : res) {
            std::string name(field.name_string());
            for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            reply.headers[name] = std::string(field.value());
        }
        reply.body = res.body();
        return reply;
    }

    boost::asio::ip::tcp::socket& socket() { return socket_; }

private:
    boost::asio::io_context ioc_;
    boost::asio::ip::tcp::socket socket_;
    boost::beast::flat_buffer buffer_;
};

// A raw TCP connection for clients that misbehave.
class RawConnection {
public:
    explicit RawConnection(std::uint16_t port) {
        fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    }
    ~RawConnection() { close(); }
    RawConnection(const RawConnection&) = delete;
    RawConnection& operator=(const RawConnection&) = delete;

    bool connected() const { return connected_; }
    void close() {
        if (fd_ >= 0) ::close(fd_);
        fd_ = -1;
    }
    bool send(std::string_view data) {
        while (!data.empty()) {
            const auto n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
            if (n <= 0) return false;
            data.remove_prefix(static_cast<std::size_t>(n));
        }
        return true;
    }
    // Reads until `until` appears, EOF, or the timeout. Returns all bytes read so far.
    std::string read_until(std::string_view until,
                           std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
        const auto deadline = std::chrono::steady_clock::now() + timeout;
        while (data_.find(until) == std::string::npos && !eof_) {
            const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                deadline - std::chrono::steady_clock::now());
            if (left.count() <= 0) break;
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
            char buffer[4096];
            const auto n = ::recv(fd_, buffer, sizeof(buffer), 0);
            if (n <= 0) {
                eof_ = true;
                break;
            }
            data_.append(buffer, static_cast<std::size_t>(n));
        }
        return data_;
    }
    // True when the server closed the connection within the timeout.
    bool closed_by_peer(std::chrono::milliseconds timeout) {
        read_until(std::string(1, '\0') + "never", timeout);
        return eof_;
    }
    const std::string& data() const { return data_; }

private:
    int fd_ = -1;
    bool connected_ = false;
    bool eof_ = false;
    std::string data_;
};

inline int status_of(const std::string& raw) {
    if (raw.size() < 12 || !raw.starts_with("HTTP/1.1 ")) return 0;
    return std::stoi(raw.substr(9, 3));
}

// A server over a FakeService for one test.
struct Fixture {
    explicit Fixture(ServerOptions options = test_options())
        : previous_level(spdlog::get_level()), server(std::move(options), service) {
        // Access lines for hundreds of test requests would drown the test output.
        spdlog::set_level(std::getenv("FORKVM_TEST_SERVER_LOG") != nullptr ? spdlog::level::debug
                                                                           : spdlog::level::err);
        service.add(key_a, "sb-a");
        service.add(key_b, "sb-b");
        server.start();
    }
    ~Fixture() {
        service.release();
        server.stop(std::chrono::milliseconds(2000));
        spdlog::set_level(previous_level);
    }
    std::uint16_t port() const { return server.port(); }
    Reply call(const std::string& method, const std::string& target, const std::string& body = "",
               std::map<std::string, std::string> headers = {}, const std::string& key = key_a) {
        Client client(port());
        return client.request(method, target, body, std::move(headers), key);
    }

    spdlog::level::level_enum previous_level;
    FakeService service;
    HttpServer server;
};

inline std::size_t open_fds() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++n;
    return n;
}

}  // namespace forkvm::server::test
