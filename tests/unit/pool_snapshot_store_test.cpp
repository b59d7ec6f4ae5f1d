// SnapshotStore: snapshots on disk per owner, quotas, pins, and reload after
// a restart; nothing left behind on any failure.
#include <unistd.h>

#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>

#include "pool/service_error.hpp"
#include "pool/snapshot_store.hpp"
#include "tests/support/fake_snapshot.hpp"
#include "tests/support/service_errors.hpp"
#include "tests/support/temp_dir.hpp"

using forkvm::pool::ErrorCode;
using forkvm::pool::ServiceError;
using forkvm::pool::SnapshotStore;
using forkvm::pool::SnapshotStoreSettings;
using forkvm::test::code_of;
namespace fs = std::filesystem;

namespace {

struct TempRoot : forkvm::test::TempDir {
    TempRoot() : TempDir("forkvm_snapstore") {}
};

SnapshotStoreSettings settings_in(const TempRoot& root, std::size_t max_count = 3,
                                  std::uint64_t max_bytes = 64ULL << 20) {
    return {(root.path / "snapshots").string(), max_count, max_bytes};
}

const SnapshotStore::Writer good_writer = [](const std::string& dir) {
    forkvm::test::write_fake_snapshot(dir);
};

std::size_t entries_in(const fs::path& dir) {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
    return n;
}

}  // namespace

TEST_CASE("snapshot store: create, get, list per owner, delete") {
    const TempRoot root;
    SnapshotStore store(settings_in(root));
    const auto a = store.create("alice", "sb-1", {{"k", "v"}}, good_writer);
    CHECK(a.id.starts_with("snap-"));
    CHECK(a.id.size() == 21);
    CHECK(a.owner == "alice");
    CHECK(a.source_sandbox == "sb-1");
    CHECK(a.labels.at("k") == "v");
    CHECK(a.memory_bytes == 65536U);
    CHECK(a.disk_bytes > 0U);
    CHECK(fs::exists(fs::path(store.dir_of("alice", a.id)) / "meta.json"));
    const auto b = store.create("alice", "sb-2", {}, good_writer, true);
    const auto c = store.create("bob", "sb-3", {}, good_writer);

    CHECK(store.get("alice", a.id) == a);
    CHECK(store.list("alice").size() == 2U);
    CHECK(store.list("bob").size() == 1U);
    CHECK(store.list("carol").empty());
    // Another owner's snapshot is exactly like an unknown one.
    CHECK(code_of([&] { (void)store.get("bob", a.id); }) == ErrorCode::not_found);
    CHECK(code_of([&] { store.remove("bob", a.id); }) == ErrorCode::not_found);
    CHECK(code_of([&] { (void)store.get("alice", "snap-0000000000000000"); }) == ErrorCode::not_found);

    store.remove("alice", b.id);
    CHECK(code_of([&] { (void)store.get("alice", b.id); }) == ErrorCode::not_found);
    CHECK_FALSE(fs::exists(root.path / "snapshots" / b.id));
    CHECK(entries_in(root.path / "snapshots") == 2U);
    (void)c;
}

TEST_CASE("snapshot store: a failing writer or a bad snapshot leaves nothing behind") {
    const TempRoot root;
    SnapshotStore store(settings_in(root));
    CHECK_THROWS_WITH_AS(store.create("alice", "sb-1", {},
                                      [](const std::string& dir) {
                                          forkvm::test::write_fake_snapshot(dir);
                                          throw std::runtime_error("VM died while saving");
                                      }),
                         "VM died while saving", std::runtime_error);
    // The writer "succeeds" but the result is not a snapshot.
    CHECK_THROWS(
        store.create("alice", "sb-1", {}, [](const std::string& dir) { fs::create_directory(dir); }));
    // A flipped memory byte passes the quick check but not the deep one.
    CHECK_THROWS(store.create(
        "alice", "sb-1", {},
        [](const std::string& dir) {
            forkvm::test::write_fake_snapshot(dir);
            std::fstream f(dir + "/memory.bin", std::ios::in | std::ios::out | std::ios::binary);
            f.seekp(100);
            f.put('X');
        },
        true));
    CHECK(entries_in(root.path / "snapshots") == 0U);
    CHECK(store.list("alice").empty());
    // The failures did not use up the quota.
    for (int i = 0; i < 3; ++i) (void)store.create("alice", "sb", {}, good_writer);
}

TEST_CASE("snapshot store: count and disk quotas per owner") {
    const TempRoot root;
    SnapshotStore store(settings_in(root, 2));
    const auto first = store.create("alice", "sb", {}, good_writer);
    (void)store.create("alice", "sb", {}, good_writer);
    CHECK(code_of([&] { (void)store.create("alice", "sb", {}, good_writer); }) == ErrorCode::rate_limited);
    (void)store.create("bob", "sb", {}, good_writer);  // other owners are not affected
    store.remove("alice", first.id);
    (void)store.create("alice", "sb", {}, good_writer);

    const TempRoot small_root;
    SnapshotStore small(settings_in(small_root, 10, 100 * 1024));  // room for one 64 KiB snapshot
    (void)small.create("alice", "sb", {}, good_writer);
    CHECK(code_of([&] { (void)small.create("alice", "sb", {}, good_writer); }) == ErrorCode::rate_limited);
    CHECK(entries_in(small_root.path / "snapshots") == 1U);
}

TEST_CASE("snapshot store: a pinned snapshot cannot be deleted") {
    const TempRoot root;
    SnapshotStore store(settings_in(root));
    const auto s = store.create("alice", "sb", {}, good_writer);
    const auto dir = store.pin("alice", s.id, "py");
    CHECK(fs::exists(fs::path(dir) / "memory.bin"));
    CHECK(store.get("alice", s.id).templates == std::vector<std::string>{"py"});
    CHECK(code_of([&] { store.remove("alice", s.id); }) == ErrorCode::conflict);
    CHECK(code_of([&] { (void)store.pin("bob", s.id, "py"); }) == ErrorCode::not_found);
    store.unpin(s.id, "py");
    store.remove("alice", s.id);
}

TEST_CASE("snapshot store: snapshots survive a restart, leftovers and damage are handled") {
    const TempRoot root;
    std::string kept;
    {
        SnapshotStore store(settings_in(root));
        kept = store.create("alice", "sb-9", {{"x", "y"}}, good_writer).id;
        (void)store.create("bob", "sb-8", {}, good_writer);
    }
    const fs::path dir = root.path / "snapshots";
    // An interrupted create, a damaged snapshot, and a stray directory.
    forkvm::test::write_fake_snapshot((dir / ".tmp-snap-00000000000000aa").string());
    forkvm::test::write_fake_snapshot((dir / "snap-00000000000000bb").string());  // no meta.json
    fs::create_directory(dir / "not-a-snapshot");

    SnapshotStore again(settings_in(root));
    const auto list = again.list("alice");
    REQUIRE(list.size() == 1U);
    CHECK(list[0].id == kept);
    CHECK(list[0].source_sandbox == "sb-9");
    CHECK(list[0].labels.at("x") == "y");
    CHECK(again.list("bob").size() == 1U);
    CHECK_FALSE(fs::exists(dir / ".tmp-snap-00000000000000aa"));
    CHECK(fs::exists(dir / "snap-00000000000000bb"));  // left for the operator, not listed
    CHECK(fs::exists(dir / "not-a-snapshot"));
}
