// TemplateCatalog: templates over snapshots, each with its own warm pool of
// fake VMs; persistence, failure to reopen, resize, delete draining the pool
// while leased VMs live on.
#include <unistd.h>

#include <atomic>
#include <doctest/doctest.h>
#include <filesystem>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "pool/service_error.hpp"
#include "pool/template_catalog.hpp"
#include "tests/support/fake_snapshot.hpp"
#include "tests/support/service_errors.hpp"
#include "tests/support/temp_dir.hpp"

using namespace forkvm::pool;
using forkvm::test::code_of;
using forkvm::test::field_of;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

struct TempRoot : forkvm::test::TempDir {
    TempRoot() : TempDir("forkvm_templates") {}
};

// What the fake VMs and sources did.
struct Log {
    std::mutex mutex;
    std::set<std::string> live;    // VMs not destroyed
    std::set<std::string> opened;  // snapshot dirs sources were opened on
    std::atomic<int> sources_alive{0};
    bool refuse = false;  // the next opens fail like a refused snapshot
    std::size_t live_count() {
        const std::lock_guard lock(mutex);
        return live.size();
    }
};

class FakeVm final : public PooledVm {
public:
    FakeVm(Log& log, std::string id) : log_(log), id_(std::move(id)) {
        const std::lock_guard lock(log_.mutex);
        log_.live.insert(id_);
    }
    ~FakeVm() override { destroy(); }
    std::string id() const override { return id_; }
    void resume(const std::string&) override {}
    bool healthy() override { return true; }
    void destroy() noexcept override {
        const std::lock_guard lock(log_.mutex);
        log_.live.erase(id_);
    }
    forkvm::vmm::AgentClient& agent() override { throw std::logic_error("no agent"); }
    std::unique_ptr<PooledVm> fork(const std::string&) override { throw std::logic_error("no fork"); }
    void snapshot(const std::string&) override { throw std::logic_error("no snapshot"); }
    std::string console_tail() noexcept override { return {}; }

private:
    Log& log_;
    std::string id_;
};

class FakeSource final : public VmSource {
public:
    explicit FakeSource(Log& log) : log_(log) { ++log_.sources_alive; }
    ~FakeSource() override { --log_.sources_alive; }
    std::unique_ptr<PooledVm> fork_paused(const std::string& id) override {
        return std::make_unique<FakeVm>(log_, id);
    }

private:
    Log& log_;
};

struct World {
    TempRoot root;
    Log log;
    std::unique_ptr<SnapshotStore> snapshots;
    std::unique_ptr<TemplateCatalog> catalog;

    World() {
        snapshots = std::make_unique<SnapshotStore>(
            SnapshotStoreSettings{(root.path / "snapshots").string(), 10, 1ULL << 30});
        open_catalog();
    }
    void open_catalog() {
        TemplateCatalogSettings settings;
        settings.root = (root.path / "templates").string();
        settings.max_per_owner = 3;
        settings.max_warm_limit = 4;
        settings.pool_base.lease_wait = 2000ms;
        catalog = std::make_unique<TemplateCatalog>(*snapshots, settings, [this](const std::string& dir) {
            {
                const std::lock_guard lock(log.mutex);
                if (log.refuse) throw std::runtime_error("snapshot refused: CPUID differs");
                log.opened.insert(dir);
            }
            return std::make_unique<FakeSource>(log);
        });
    }
    std::string snapshot(const std::string& owner) {
        return snapshots
            ->create(owner, "sb", {}, [](const std::string& dir) { forkvm::test::write_fake_snapshot(dir); })
            .id;
    }
    bool wait_live(std::size_t n) {
        for (int i = 0; i < 500; ++i) {
            if (log.live_count() == n) return true;
            std::this_thread::sleep_for(10ms);
        }
        return false;
    }
};

}  // namespace

TEST_CASE("templates: create warms a pool, lease takes from it, list/get per owner") {
    World w;
    const auto snap = w.snapshot("alice");
    const auto info = w.catalog->create("alice", {"py", snap, 2, 3, {}});
    CHECK(info.name == "py");
    CHECK(info.state == TemplateState::ready);
    CHECK(info.pool.min_warm == 2U);
    CHECK(info.pool.max_warm == 3U);
    CHECK(w.wait_live(2));
    CHECK(w.snapshots->get("alice", snap).templates == std::vector<std::string>{"py"});

    auto vm = w.catalog->lease("alice", "py");
    REQUIRE(vm);
    CHECK(w.wait_live(3));  // refilled to 2 warm + 1 leased
    CHECK(w.catalog->get("alice", "py").stats.leased == 1U);
    CHECK(w.catalog->list("alice").size() == 1U);
    CHECK(w.catalog->list("bob").empty());
    CHECK(code_of([&] { (void)w.catalog->get("bob", "py"); }) == ErrorCode::not_found);
    CHECK(code_of([&] { (void)w.catalog->lease("bob", "py"); }) == ErrorCode::not_found);
    CHECK(w.catalog->pools("alice").size() == 1U);
    CHECK(w.catalog->pools("alice")[0].template_name == "py");
}

TEST_CASE("templates: bad requests are refused with the field at fault") {
    World w;
    const auto snap = w.snapshot("alice");
    CHECK(field_of([&] { w.catalog->create("alice", {"Bad Name", snap, {}, {}, {}}); }) == "name");
    CHECK(field_of([&] { w.catalog->create("alice", {"", snap, {}, {}, {}}); }) == "name");
    CHECK(field_of([&] { w.catalog->create("alice", {std::string(64, 'a'), snap, {}, {}, {}}); }) == "name");
    CHECK(field_of([&] { w.catalog->create("alice", {"ok", snap, 3, 2, {}}); }) == "min_warm");
    CHECK(field_of([&] { w.catalog->create("alice", {"ok", snap, 0, 5, {}}); }) == "max_warm");
    CHECK(field_of([&] { w.catalog->create("alice", {"ok", snap, 0, 0, {}}); }) == "max_warm");
    CHECK(code_of([&] {
              w.catalog->create("alice", {"ok", "snap-0000000000000000", {}, {}, {}});
          }) == ErrorCode::not_found);
    CHECK(code_of([&] { w.catalog->create("bob", {"ok", snap, {}, {}, {}}); }) == ErrorCode::not_found);
    {
        const std::lock_guard lock(w.log.mutex);
        w.log.refuse = true;
    }
    CHECK(field_of([&] { w.catalog->create("alice", {"ok", snap, {}, {}, {}}); }) == "snapshot_id");
    CHECK(w.snapshots->get("alice", snap).templates.empty());  // the failed create unpinned it
    {
        const std::lock_guard lock(w.log.mutex);
        w.log.refuse = false;
    }
    (void)w.catalog->create("alice", {"ok", snap, 0, 1, {}});
    CHECK(code_of([&] { w.catalog->create("alice", {"ok", snap, 0, 1, {}}); }) == ErrorCode::conflict);
    (void)w.catalog->create("alice", {"ok2", snap, 0, 1, {}});
    (void)w.catalog->create("alice", {"ok3", snap, 0, 1, {}});
    CHECK(code_of([&] { w.catalog->create("alice", {"ok4", snap, 0, 1, {}}); }) == ErrorCode::rate_limited);
    CHECK(fs::exists(w.root.path / "templates"));
}

TEST_CASE("templates: delete drains the pool, leased VMs live on, the snapshot is unpinned") {
    World w;
    const auto snap = w.snapshot("alice");
    (void)w.catalog->create("alice", {"py", snap, 2, 2, {}});
    CHECK(w.wait_live(2));
    auto leased = w.catalog->lease("alice", "py");
    CHECK(w.wait_live(3));
    CHECK(code_of([&] { w.snapshots->remove("alice", snap); }) == ErrorCode::conflict);

    w.catalog->remove("alice", "py");
    CHECK(w.wait_live(1));  // only the leased one
    CHECK(leased);
    CHECK(code_of([&] { (void)w.catalog->get("alice", "py"); }) == ErrorCode::not_found);
    CHECK(code_of([&] { (void)w.catalog->lease("alice", "py"); }) == ErrorCode::not_found);
    leased.release();
    CHECK(w.wait_live(0));
    CHECK(w.log.sources_alive.load() == 0);
    w.snapshots->remove("alice", snap);  // no longer pinned
    CHECK(fs::is_empty(w.root.path / "templates"));
}

TEST_CASE("templates: update resizes the pool over the same zygote") {
    World w;
    const auto snap = w.snapshot("alice");
    (void)w.catalog->create("alice", {"py", snap, 1, 2, {}});
    CHECK(w.wait_live(1));
    auto info = w.catalog->update("alice", "py", {3, 4});
    CHECK(info.pool.min_warm == 3U);
    CHECK(info.pool.max_warm == 4U);
    CHECK(w.wait_live(3));
    CHECK(w.log.opened.size() == 1U);  // not restored again
    info = w.catalog->update("alice", "py", {0, {}});
    CHECK(info.pool.max_warm == 4U);
    CHECK(w.wait_live(0));
    CHECK(field_of([&] { w.catalog->update("alice", "py", {5, {}}); }) == "min_warm");
    CHECK(code_of([&] { w.catalog->update("bob", "py", {1, 1}); }) == ErrorCode::not_found);
}

TEST_CASE("templates: a restart reopens templates, one that cannot be restored is failed until updated") {
    World w;
    const auto snap = w.snapshot("alice");
    // py's egress policy is kept with it; js has none (the empty policy).
    const auto policy = forkvm::http_proxy::Policy::parse(
        nlohmann::json::parse(R"({"allow": [{"domain": "*.pypi.org", "ports": [443]}]})"));
    CHECK(w.catalog->create("alice", {"py", snap, 1, 2, policy}).egress == policy);
    (void)w.catalog->create("alice", {"js", snap, 0, 1, {}});
    CHECK(w.wait_live(1));
    w.catalog.reset();  // "restart"
    CHECK(w.wait_live(0));
    w.open_catalog();
    const auto list = w.catalog->list("alice");
    REQUIRE(list.size() == 2U);
    CHECK(list[0].name == "js");
    CHECK(list[1].name == "py");
    CHECK(list[1].state == TemplateState::ready);
    CHECK(list[1].egress == policy);
    CHECK(list[0].egress == forkvm::http_proxy::Policy());
    CHECK(w.wait_live(1));
    CHECK(w.snapshots->get("alice", snap).templates.size() == 2U);

    w.catalog.reset();
    {
        const std::lock_guard lock(w.log.mutex);
        w.log.refuse = true;
    }
    w.open_catalog();
    auto info = w.catalog->get("alice", "py");
    CHECK(info.state == TemplateState::failed);
    CHECK(info.error.find("CPUID") != std::string::npos);
    CHECK(code_of([&] { (void)w.catalog->lease("alice", "py"); }) == ErrorCode::conflict);
    CHECK(w.catalog->pools("alice").empty());
    CHECK(code_of([&] { w.catalog->update("alice", "py", {1, {}}); }) == ErrorCode::invalid_argument);
    {
        const std::lock_guard lock(w.log.mutex);
        w.log.refuse = false;
    }
    info = w.catalog->update("alice", "py", {1, {}});
    CHECK(info.state == TemplateState::ready);
    CHECK(w.wait_live(1));
    // Deleting the failed-then-fixed templates frees the snapshot.
    w.catalog->remove("alice", "py");
    w.catalog->remove("alice", "js");
    w.snapshots->remove("alice", snap);
}
