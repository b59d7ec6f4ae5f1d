// Per-VM cgroups (vmm/cgroup.hpp) over a fake cgroup tree: which files get
// which limits for cgroup v2 and v1, what a missing controller skips, and
// how the OOM count is read. The kvm jail test checks the real thing.

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/support/temp_dir.hpp"
#include "vmm/cgroup.hpp"

using forkvm::vmm::CgroupHost;
using forkvm::vmm::CgroupLimits;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void put(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

// A child that waits to be killed: the "VM process" placed in the fake
// groups (~VmCgroup kills whatever cgroup.procs lists, so it must be ours).
struct Sleeper {
    pid_t pid = ::fork();
    Sleeper() {
        if (pid == 0) {
            ::pause();
            ::_exit(0);
        }
        REQUIRE(pid > 0);
    }
    ~Sleeper() {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
    }
    [[nodiscard]] bool gone() const { return ::kill(pid, 0) != 0 && errno == ESRCH; }
};

}  // namespace

TEST_CASE("cgroup: v2 puts a VM process in vm-<pid> with its memory, task and CPU limits") {
    forkvm::test::TempDir tmp("forkvm_cgroup");
    const fs::path parent = tmp.path / "forkvm";
    fs::create_directories(parent);
    CgroupHost::Layout layout;
    layout.version = CgroupHost::Version::v2;
    layout.parents[""] = parent.string();
    CgroupHost host(layout);
    CHECK(host.enforcing());
    CHECK(host.describe() == "cgroup v2 under " + parent.string());

    Sleeper vm;
    const std::string pid = std::to_string(vm.pid);
    auto group = host.place(vm.pid, CgroupLimits{.memory_max = 0, .pids_max = 40, .cpu_quota_percent = 50});
    REQUIRE(group != nullptr);
    const fs::path dir = parent / ("vm-" + pid);
    CHECK(slurp(dir / "cgroup.procs") == pid);
    CHECK(slurp(dir / "pids.max") == "40");
    CHECK(slurp(dir / "cpu.max") == "50000 100000");
    CHECK_FALSE(fs::exists(dir / "memory.max"));  // set once the guest's size is known

    put(dir / "memory.swap.max", "max");
    group->set_memory_max(384ULL << 20);
    CHECK(slurp(dir / "memory.max") == std::to_string(384ULL << 20));
    CHECK(slurp(dir / "memory.swap.max") == "0");
    CHECK(group->memory_dir() == dir.string());

    CHECK(group->oom_kills() == 0);
    put(dir / "memory.events", "low 0\nhigh 0\nmax 7\noom 2\noom_kill 1\n");
    CHECK(group->oom_kills() == 1);

    // Whatever else is still in the group when it goes is killed and reaped
    // (the VM process itself is its VmProcess's to kill and reap).
    Sleeper stray;
    put(dir / "cgroup.procs", pid + "\n" + std::to_string(stray.pid) + "\n");
    group.reset();
    CHECK(stray.gone());
    CHECK_FALSE(vm.gone());
}

TEST_CASE("cgroup: v1 writes each controller's own files in its own hierarchy") {
    forkvm::test::TempDir tmp("forkvm_cgroup");
    CgroupHost::Layout layout;
    layout.version = CgroupHost::Version::v1;
    for (const char* c : {"cpu", "memory", "pids"}) {
        fs::create_directories(tmp.path / c / "forkvm");
        layout.parents[c] = (tmp.path / c / "forkvm").string();
    }
    CgroupHost host(layout);
    Sleeper vm;
    const std::string name = "forkvm/vm-" + std::to_string(vm.pid);
    auto group =
        host.place(vm.pid, CgroupLimits{.memory_max = 1 << 20, .pids_max = 9, .cpu_quota_percent = 150});
    REQUIRE(group != nullptr);
    CHECK(slurp(tmp.path / "memory" / name / "memory.limit_in_bytes") == std::to_string(1 << 20));
    CHECK(slurp(tmp.path / "pids" / name / "pids.max") == "9");
    CHECK(slurp(tmp.path / "cpu" / name / "cpu.cfs_period_us") == "100000");
    CHECK(slurp(tmp.path / "cpu" / name / "cpu.cfs_quota_us") == "150000");
    for (const char* c : {"cpu", "memory", "pids"}) {
        CAPTURE(c);
        CHECK(slurp(tmp.path / c / name / "cgroup.procs") == std::to_string(vm.pid));
    }
    put(tmp.path / "memory" / name / "memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n");
    CHECK(group->oom_kills() == 3);
    CHECK(host.describe().find("cgroup v1 (cpu under ") == 0);
}

TEST_CASE("cgroup: a missing controller's limit is skipped and named, and no cgroups at all places nothing") {
    forkvm::test::TempDir tmp("forkvm_cgroup");
    CgroupHost::Layout layout;
    layout.version = CgroupHost::Version::v2;
    layout.parents[""] = tmp.path.string();
    layout.missing = {"cpu"};
    CgroupHost host(layout);
    Sleeper vm;
    const fs::path dir = tmp.path / ("vm-" + std::to_string(vm.pid));
    auto group = host.place(vm.pid, CgroupLimits{.memory_max = 4096, .pids_max = 0, .cpu_quota_percent = 50});
    CHECK_FALSE(fs::exists(dir / "cpu.max"));
    CHECK_FALSE(fs::exists(dir / "pids.max"));  // 0 = no limit
    CHECK(slurp(dir / "memory.max") == "4096");
    CHECK(host.describe().find("missing controllers: cpu") != std::string::npos);

    CgroupHost none(CgroupHost::Layout{}, "no cgroup mounted");
    CHECK_FALSE(none.enforcing());
    CHECK(none.place(vm.pid, {}) == nullptr);
    CHECK(none.describe().find("no per-VM cgroups (no cgroup mounted)") == 0);
}

TEST_CASE("cgroup: a group that cannot be made is an error naming the file") {
    CgroupHost::Layout layout;
    layout.version = CgroupHost::Version::v2;
    layout.parents[""] = "/nonexistent/forkvm-test-parent";
    CgroupHost host(layout);
    try {
        (void)host.place(123456789, {});  // fails before anything is written or killed
        FAIL("place() succeeded under a missing parent");
    } catch (const std::exception& e) {
        CHECK(std::string(e.what()).find("/nonexistent/forkvm-test-parent/vm-123456789") !=
              std::string::npos);
    }
}

TEST_CASE("cgroup: v2 delegation hands the parent to the server user and moves the server into a leaf") {
    if (::geteuid() != 0) {
        MESSAGE("not root: chown cannot be checked here");
        return;
    }
    forkvm::test::TempDir tmp("forkvm_cgroup");
    const fs::path parent = tmp.path / "forkvm";
    fs::create_directories(parent);
    for (const char* f : {"cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "memory.max"})
        put(parent / f, "");
    CgroupHost::Layout layout;
    layout.version = CgroupHost::Version::v2;
    layout.parents[""] = parent.string();
    // The leaf's interface files exist in a real cgroup the moment it is made.
    fs::create_directories(parent / "forkvm-server");
    put(parent / "forkvm-server" / "cgroup.threads", "");
    CgroupHost(layout).delegate(4000321, 4000322);

    auto owner = [](const fs::path& p) {
        struct stat st {};
        REQUIRE(::stat(p.c_str(), &st) == 0);
        return std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid);
    };
    for (const char* f : {"", "cgroup.procs", "cgroup.threads", "cgroup.subtree_control"})
        CHECK(owner(parent / f) == "4000321:4000322");
    for (const char* f : {"", "cgroup.procs", "cgroup.threads"})
        CHECK(owner(parent / "forkvm-server" / f) == "4000321:4000322");
    CHECK(owner(parent / "memory.max") == "0:0");  // limits stay the owner's to set
    CHECK(slurp(parent / "forkvm-server" / "cgroup.procs") == std::to_string(::getpid()));
}

TEST_CASE("cgroup: v1 cannot be delegated, and without cgroups there is nothing to hand over") {
    forkvm::test::TempDir tmp("forkvm_cgroup");
    CgroupHost::Layout v1;
    v1.version = CgroupHost::Version::v1;
    v1.parents["memory"] = tmp.path.string();
    try {
        CgroupHost(v1).delegate(4000321, 4000321);
        FAIL("delegating cgroup v1 did not throw");
    } catch (const std::exception& e) {
        CHECK(std::string(e.what()).find("cgroup v1 cannot be handed to an unprivileged server") !=
              std::string::npos);
    }
    CHECK_NOTHROW(CgroupHost(CgroupHost::Layout{}, "no cgroups").delegate(4000321, 4000321));
    CHECK(fs::is_empty(tmp.path));
}
