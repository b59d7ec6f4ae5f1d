// The agent's file operations over a socketpair: write/read with credit,
// stat, list, exists, remove, rename, mkdir and their error codes.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <doctest/doctest.h>
#include <fstream>
#include <iterator>
#include <string>

#include "guest/agent/test_harness.hpp"

namespace proto = forkvm::proto;
using forkvm::agent::testing::AgentHarness;

namespace {

// A fresh directory under /tmp, removed (recursively, through the agent's
// own code path is not needed: `rm -rf`) at the end.
struct TempDir {
    std::string path;
    TempDir() {
        char tmpl[] = "/tmp/h5_files_XXXXXX";
        if (::mkdtemp(tmpl) != nullptr) path = tmpl;
    }
    ~TempDir() {
        if (!path.empty()) (void)std::system(("rm -rf '" + path + "'").c_str());
    }
    [[nodiscard]] std::string operator/(const std::string& name) const { return path + "/" + name; }
};

void write_text(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

std::string read_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

proto::ErrorCode error_of(const std::optional<proto::Message>& m) {
    if (!m || !std::holds_alternative<proto::Error>(*m)) return proto::ErrorCode::internal;
    return std::get<proto::Error>(*m).code;
}

bool is_ok(const std::optional<proto::Message>& m) { return m && std::holds_alternative<proto::Ok>(*m); }

// Uploads `data` honouring the agent's credit; returns the final reply.
std::optional<proto::Message> upload(AgentHarness& h, std::uint32_t id, const proto::WriteFileBegin& begin,
                                     const proto::Bytes& data, std::size_t chunk = 16384) {
    auto first = h.request(id, begin);
    if (!first || !std::holds_alternative<proto::Credit>(*first)) return first;
    std::uint64_t credit = std::get<proto::Credit>(*first).bytes;
    std::size_t off = 0;
    while (off < data.size()) {
        while (credit == 0) {
            auto f = h.recv();
            if (!f) return std::nullopt;
            auto c = proto::decode_message<proto::Credit>(*f);
            if (!c) return proto::decode_any(*f).value();
            credit += c->bytes;
        }
        const std::size_t n =
            std::min<std::size_t>({chunk, data.size() - off, static_cast<std::size_t>(credit)});
        proto::FileData d;
        d.data.assign(data.begin() + static_cast<std::ptrdiff_t>(off),
                      data.begin() + static_cast<std::ptrdiff_t>(off + n));
        if (!h.send(id, d)) return std::nullopt;
        off += n;
        credit -= n;
    }
    if (!h.send(id, proto::WriteFileEnd{})) return std::nullopt;
    while (auto f = h.recv()) {
        if (f->type == proto::MessageType::credit) continue;  // late window refills
        auto m = proto::decode_any(*f);
        if (!m) return std::nullopt;
        return std::move(*m);
    }
    return std::nullopt;
}

struct Download {
    proto::Bytes data;
    std::optional<proto::FileEnd> end;
    std::optional<proto::Error> error;
    std::uint64_t max_unacked = 0;  // most bytes received beyond the credit granted
};

Download download(AgentHarness& h, std::uint32_t id, const proto::ReadFile& req, std::uint32_t regrant) {
    Download d;
    if (!h.send(id, req)) return d;
    std::uint64_t granted = req.initial_credit;
    while (auto f = h.recv()) {
        auto m = proto::decode_any(*f);
        if (!m) break;
        if (auto* fd = std::get_if<proto::FileData>(&*m)) {
            d.data.insert(d.data.end(), fd->data.begin(), fd->data.end());
            if (d.data.size() > granted)
                d.max_unacked = std::max<std::uint64_t>(d.max_unacked, d.data.size() - granted);
            if (regrant != 0) {
                h.send(id, proto::Credit{proto::StreamId::file_data,
                                         static_cast<std::uint32_t>(fd->data.size())});
                granted += fd->data.size();
            }
        } else if (auto* e = std::get_if<proto::FileEnd>(&*m)) {
            d.end = *e;
            break;
        } else if (auto* err = std::get_if<proto::Error>(&*m)) {
            d.error = *err;
            break;
        }
    }
    return d;
}

}  // namespace

TEST_CASE("agent_server: a 256 KiB file with every byte value round-trips with credit") {
    TempDir dir;
    REQUIRE(!dir.path.empty());
    AgentHarness h;
    REQUIRE(h.ready());
    proto::Bytes data(256 * 1024);
    for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<std::uint8_t>((i * 131) ^ (i >> 9));
    proto::WriteFileBegin begin{dir / "sub/deeper/blob.bin", 0600, true, proto::WriteMode::truncate,
                                data.size()};
    CHECK(is_ok(upload(h, 1, begin, data)));
    struct stat st {};
    REQUIRE(::stat((dir / "sub/deeper/blob.bin").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0600);
    CHECK(static_cast<std::size_t>(st.st_size) == data.size());

    auto d = download(h, 2, proto::ReadFile{dir / "sub/deeper/blob.bin", 0, 0, 32768}, 1);
    REQUIRE(d.end);
    CHECK(d.end->eof);
    CHECK(d.end->total_bytes == data.size());
    CHECK(d.data == data);
    CHECK(d.max_unacked == 0);

    // Offset + max_bytes: a window of the file, not at EOF.
    auto part = download(h, 3, proto::ReadFile{dir / "sub/deeper/blob.bin", 1000, 5000, 65536}, 0);
    REQUIRE(part.end);
    CHECK(!part.end->eof);
    CHECK(part.end->total_bytes == 5000);
    CHECK(std::equal(part.data.begin(), part.data.end(), data.begin() + 1000));

    // Append mode.
    const proto::Bytes tail = {'x', 'y'};
    CHECK(is_ok(upload(
        h, 4, proto::WriteFileBegin{dir / "sub/deeper/blob.bin", 0644, false, proto::WriteMode::append, 2},
        tail)));
    CHECK(read_text(dir / "sub/deeper/blob.bin").size() == data.size() + 2);
}

TEST_CASE("agent_server: a read sends no more than the granted credit") {
    TempDir dir;
    write_text(dir / "f", std::string(10000, 'a'));
    AgentHarness h;
    REQUIRE(h.ready());
    REQUIRE(h.send(1, proto::ReadFile{dir / "f", 0, 0, 3000}));
    std::size_t got = 0;
    while (auto f = h.recv(300)) {
        auto d = proto::decode_message<proto::FileData>(*f);
        REQUIRE(d);
        got += d->data.size();
    }
    CHECK(got == 3000);
    REQUIRE(h.send(1, proto::Credit{proto::StreamId::file_data, 7000}));
    std::optional<proto::FileEnd> end;
    while (auto f = h.recv()) {
        if (auto d = proto::decode_message<proto::FileData>(*f)) got += d->data.size();
        if (auto e = proto::decode_message<proto::FileEnd>(*f)) {
            end = *e;
            break;
        }
    }
    REQUIRE(end);
    CHECK(end->eof);  // found at zero credit: the file is read to its end
    CHECK(got == 10000);
    // Cancelling a read in progress.
    REQUIRE(h.send(2, proto::ReadFile{dir / "f", 0, 0, 10}));
    REQUIRE(h.recv_as<proto::FileData>());
    REQUIRE(h.send(2, proto::Cancel{}));
    auto err = h.recv_as<proto::Error>();
    REQUIRE(err);
    CHECK(err->code == proto::ErrorCode::cancelled);
}

TEST_CASE("agent_server: write errors: size mismatch, missing parent, a directory") {
    TempDir dir;
    AgentHarness h;
    REQUIRE(h.ready());
    const proto::Bytes five = {1, 2, 3, 4, 5};
    // More data than announced.
    auto small = h.request(1, proto::WriteFileBegin{dir / "a", 0644, false, proto::WriteMode::truncate, 3});
    REQUIRE(small);
    REQUIRE(std::holds_alternative<proto::Credit>(*small));
    CHECK(std::get<proto::Credit>(*small).bytes == 3);
    CHECK(error_of(h.request(1, proto::FileData{five})) == proto::ErrorCode::too_large);
    // Late frames of the failed transfer are dropped silently: the ping is the next reply.
    REQUIRE(h.send(1, proto::WriteFileEnd{}));
    auto pong = h.request(1, proto::Ping{3});
    REQUIRE(pong);
    CHECK(std::holds_alternative<proto::Pong>(*pong));
    // More than the granted credit (window 64 KiB, file 1 MiB).
    auto big =
        h.request(9, proto::WriteFileBegin{dir / "big", 0644, false, proto::WriteMode::truncate, 1U << 20U});
    REQUIRE(big);
    REQUIRE(std::holds_alternative<proto::Credit>(*big));
    CHECK(std::get<proto::Credit>(*big).bytes == 65536);
    CHECK(error_of(h.request(9, proto::FileData{proto::Bytes(65537, 0)})) == proto::ErrorCode::protocol);
    // Less data than announced.
    auto begin = h.request(2, proto::WriteFileBegin{dir / "b", 0644, false, proto::WriteMode::truncate, 10});
    REQUIRE(begin);
    REQUIRE(std::holds_alternative<proto::Credit>(*begin));
    CHECK(std::get<proto::Credit>(*begin).bytes == 10);
    REQUIRE(h.send(2, proto::FileData{five}));
    CHECK(error_of(h.request(2, proto::WriteFileEnd{})) == proto::ErrorCode::invalid_argument);
    // No parent and create_parents=false.
    CHECK(error_of(h.request(
              3, proto::WriteFileBegin{dir / "no/such", 0644, false, proto::WriteMode::truncate, 1})) ==
          proto::ErrorCode::not_found);
    CHECK(error_of(h.request(4, proto::WriteFileBegin{dir.path, 0644, false, proto::WriteMode::truncate,
                                                      1})) == proto::ErrorCode::is_a_directory);
    CHECK(error_of(h.request(5, proto::WriteFileBegin{"rel/path", 0644, false, proto::WriteMode::truncate,
                                                      1})) == proto::ErrorCode::invalid_argument);
    // An empty file: zero credit, then Ok.
    CHECK(is_ok(
        upload(h, 6, proto::WriteFileBegin{dir / "empty", 0644, false, proto::WriteMode::truncate, 0}, {})));
    CHECK(read_text(dir / "empty").empty());
    // Reads: missing file and a directory.
    auto missing = download(h, 7, proto::ReadFile{dir / "nope", 0, 0, 100}, 0);
    REQUIRE(missing.error);
    CHECK(missing.error->code == proto::ErrorCode::not_found);
    auto isdir = download(h, 8, proto::ReadFile{dir.path, 0, 0, 100}, 0);
    REQUIRE(isdir.error);
    CHECK(isdir.error->code == proto::ErrorCode::is_a_directory);
}

TEST_CASE("agent_server: stat, exists and list_dir") {
    TempDir dir;
    write_text(dir / "file", "hello");
    REQUIRE(::mkdir((dir / "d").c_str(), 0750) == 0);
    REQUIRE(::symlink("file", (dir / "link").c_str()) == 0);
    REQUIRE(::symlink("/nonexistent", (dir / "dangling").c_str()) == 0);
    AgentHarness h;
    REQUIRE(h.ready());

    auto st = h.request(1, proto::Stat{dir / "file", true});
    REQUIRE(st);
    REQUIRE(std::holds_alternative<proto::StatResult>(*st));
    CHECK(std::get<proto::StatResult>(*st).type == proto::FileType::file);
    CHECK(std::get<proto::StatResult>(*st).size == 5);
    CHECK(std::get<proto::StatResult>(*st).mtime_ns > 0);
    auto d = h.request(2, proto::Stat{dir / "d", true});
    REQUIRE(d);
    CHECK(std::get<proto::StatResult>(*d).type == proto::FileType::directory);
    CHECK(std::get<proto::StatResult>(*d).mode == 0750);
    auto follow = h.request(3, proto::Stat{dir / "link", true});
    REQUIRE(follow);
    CHECK(std::get<proto::StatResult>(*follow).type == proto::FileType::file);
    auto nofollow = h.request(4, proto::Stat{dir / "link", false});
    REQUIRE(nofollow);
    CHECK(std::get<proto::StatResult>(*nofollow).type == proto::FileType::symlink);
    CHECK(error_of(h.request(5, proto::Stat{dir / "missing", true})) == proto::ErrorCode::not_found);
    CHECK(error_of(h.request(6, proto::Stat{dir / "file/sub", true})) == proto::ErrorCode::not_a_directory);
    CHECK(error_of(h.request(7, proto::Stat{std::string("/tmp/a\0b", 8), true})) ==
          proto::ErrorCode::invalid_argument);

    const auto exists = [&](std::uint32_t id, const std::string& p) {
        auto r = h.request(id, proto::Exists{p});
        return r && std::holds_alternative<proto::Bool>(*r) && std::get<proto::Bool>(*r).value;
    };
    CHECK(exists(10, dir / "file"));
    CHECK(exists(11, dir / "dangling"));
    CHECK(!exists(12, dir / "missing"));
    CHECK(!exists(13, dir / "file/sub"));

    auto list = h.request(20, proto::ListDir{dir.path, 0});
    REQUIRE(list);
    REQUIRE(std::holds_alternative<proto::DirEntries>(*list));
    const auto& entries = std::get<proto::DirEntries>(*list);
    CHECK(entries.entries.size() == 4);
    CHECK(!entries.truncated);
    bool saw_link = false;
    for (const auto& e : entries.entries) {
        if (e.name == "link") saw_link = e.type == proto::FileType::symlink;
        if (e.name == "file") CHECK(e.size == 5);
    }
    CHECK(saw_link);
    auto capped = h.request(21, proto::ListDir{dir.path, 2});
    REQUIRE(capped);
    CHECK(std::get<proto::DirEntries>(*capped).entries.size() == 2);
    CHECK(std::get<proto::DirEntries>(*capped).truncated);
    CHECK(error_of(h.request(22, proto::ListDir{dir / "missing", 0})) == proto::ErrorCode::not_found);
    CHECK(error_of(h.request(23, proto::ListDir{dir / "file", 0})) == proto::ErrorCode::not_a_directory);
}

TEST_CASE("agent_server: remove, rename and mkdir semantics") {
    TempDir dir;
    TempDir outside;
    write_text(outside / "keep", "precious");
    write_text(dir / "f", "x");
    REQUIRE(::mkdir((dir / "full").c_str(), 0755) == 0);
    write_text(dir / "full/inner", "y");
    REQUIRE(::mkdir((dir / "full/sub").c_str(), 0755) == 0);
    REQUIRE(::symlink(outside.path.c_str(), (dir / "full/sub/escape").c_str()) == 0);
    REQUIRE(::mkdir((dir / "empty").c_str(), 0755) == 0);
    AgentHarness h;
    REQUIRE(h.ready());

    CHECK(is_ok(h.request(1, proto::Remove{dir / "f", false})));
    CHECK(::access((dir / "f").c_str(), F_OK) != 0);
    CHECK(error_of(h.request(2, proto::Remove{dir / "f", false})) == proto::ErrorCode::not_found);
    CHECK(error_of(h.request(3, proto::Remove{dir / "full", false})) == proto::ErrorCode::not_empty);
    CHECK(is_ok(h.request(4, proto::Remove{dir / "empty", false})));
    CHECK(is_ok(h.request(5, proto::Remove{dir / "full", true})));
    CHECK(::access((dir / "full").c_str(), F_OK) != 0);
    CHECK(read_text(outside / "keep") == "precious");  // the symlink was not followed
    CHECK(error_of(h.request(6, proto::Remove{"/", true})) == proto::ErrorCode::invalid_argument);

    write_text(dir / "a", "A");
    CHECK(is_ok(h.request(10, proto::Rename{dir / "a", dir / "b"})));
    CHECK(read_text(dir / "b") == "A");
    CHECK(error_of(h.request(11, proto::Rename{dir / "a", dir / "c"})) == proto::ErrorCode::not_found);
    REQUIRE(::mkdir((dir / "d1").c_str(), 0755) == 0);
    REQUIRE(::mkdir((dir / "d2").c_str(), 0755) == 0);
    write_text(dir / "d2/x", "x");
    CHECK(error_of(h.request(12, proto::Rename{dir / "d1", dir / "d2"})) == proto::ErrorCode::not_empty);

    CHECK(is_ok(h.request(20, proto::Mkdir{dir / "m", 0700, false})));
    struct stat st {};
    REQUIRE(::stat((dir / "m").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);
    CHECK(error_of(h.request(21, proto::Mkdir{dir / "m", 0755, false})) == proto::ErrorCode::already_exists);
    CHECK(is_ok(h.request(22, proto::Mkdir{dir / "m", 0755, true})));  // -p: existing is fine
    CHECK(error_of(h.request(23, proto::Mkdir{dir / "x/y/z", 0755, false})) == proto::ErrorCode::not_found);
    CHECK(is_ok(h.request(24, proto::Mkdir{dir / "x/y/z", 0711, true})));
    REQUIRE(::stat((dir / "x/y/z").c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0711);
    CHECK(error_of(h.request(25, proto::Mkdir{dir / "b/sub", 0755, true})) ==
          proto::ErrorCode::not_a_directory);
    CHECK(error_of(h.request(26, proto::Mkdir{dir / "b", 0755, true})) == proto::ErrorCode::already_exists);
    CHECK(error_of(h.request(27, proto::Mkdir{"relative", 0755, false})) ==
          proto::ErrorCode::invalid_argument);
    CHECK(error_of(h.request(0, proto::Mkdir{dir / "zero", 0755, false})) ==
          proto::ErrorCode::invalid_argument);
}
