// The jail of VM processes (vmm/jail.hpp, vmm/seccomp_filter.hpp,
// docs/security.md), checked from outside through /proc and from inside
// through the probe test hook (vmm/jail_probe.hpp): a VM process is not
// root, sees only its own tiny root, has namespaces of its own, and a
// forbidden action either fails or ends that VM alone with the reason
// reported, while the controller and the other VMs carry on.

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "pool/sandbox_manager.hpp"
#include "pool/vm_process_source.hpp"
#include "pool/warm_pool.hpp"
#include "vm_fixture.hpp"

using forkvm::test::kOpTimeout;
using forkvm::test::shared_vm;
using forkvm::test::status_field;
using forkvm::test::TestVm;
using forkvm::vmm::CloneOptions;
using forkvm::vmm::VmProcess;
using forkvm::vmm::VmProcessError;
namespace fs = std::filesystem;

namespace {

std::set<std::string> entries_of(const fs::path& dir) {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
    return names;
}

std::vector<std::string> lines_of(const fs::path& file) {
    std::ifstream in(file);
    std::vector<std::string> lines;
    std::string line;
    while (std::getline(in, line)) lines.push_back(line);
    return lines;
}

void check_jailed(const VmProcess& vm) {
    const pid_t pid = vm.pid();
    const uid_t uid = vm.jail_uid();
    CAPTURE(pid);
    REQUIRE(uid >= forkvm::test::kJailUidBase);
    const std::string id = std::to_string(uid);
    // Real, effective, saved and file-system ids: all the VM's own.
    CHECK(status_field(pid, "Uid") == id + "\t" + id + "\t" + id + "\t" + id);
    CHECK(status_field(pid, "Gid") == id + "\t" + id + "\t" + id + "\t" + id);
    CHECK(status_field(pid, "CapEff") == "0000000000000000");
    CHECK(status_field(pid, "CapPrm") == "0000000000000000");
    CHECK(status_field(pid, "CapBnd") == "0000000000000000");
    CHECK(status_field(pid, "NoNewPrivs") == "1");
    CHECK(status_field(pid, "Seccomp") == "2");  // filter mode

    const fs::path proc = "/proc/" + std::to_string(pid);
    // Its root is empty, and the only mount in its mount namespace.
    CHECK(entries_of(proc / "root").empty());
    const auto mounts = lines_of(proc / "mountinfo");
    CAPTURE(mounts.size());
    REQUIRE(mounts.size() == 1);
    CHECK(mounts[0].find(" / / ro,") != std::string::npos);
    for (const char* ns : {"mnt", "net", "ipc", "uts"}) {
        CAPTURE(ns);
        CHECK(fs::read_symlink(proc / "ns" / ns) != fs::read_symlink(fs::path("/proc/self/ns") / ns));
    }
    // No network device but loopback (down) in its network namespace.
    const auto dev = lines_of(proc / "net" / "dev");
    CHECK(dev.size() == 3);  // two header lines and "lo"

    // A cgroup of its own with the memory and task limits (the emulated
    // KVM host has cgroup v2; a v1 host has one directory per controller).
    const auto dirs = vm.cgroup_dirs();
    REQUIRE_FALSE(dirs.empty());
    for (const auto& [controller, dir] : dirs) {
        CAPTURE(dir);
        CHECK(fs::path(dir).filename().string() == "vm-" + std::to_string(pid));
        const auto procs = lines_of(fs::path(dir) / "cgroup.procs");
        std::string listed;
        for (const auto& p : procs) listed += p + " ";
        CAPTURE(listed);
        // The VM process, and KVM's per-VM kernel thread (joins the cgroup
        // of the process that made the VM, so it must be made in here).
        CHECK(procs.size() <= 2);
        CHECK(std::find(procs.begin(), procs.end(), std::to_string(pid)) != procs.end());
    }
    const bool v2 = dirs.contains("");
    const fs::path memory_dir = v2 ? dirs.at("") : dirs.at("memory");
    const fs::path pids_dir = v2 ? dirs.at("") : dirs.at("pids");
    const std::uint64_t limit = (256ULL << 20) + forkvm::test::kMemoryOverhead;
    CHECK(lines_of(memory_dir / (v2 ? "memory.max" : "memory.limit_in_bytes")) ==
          std::vector<std::string>{std::to_string(limit)});
    CHECK(lines_of(pids_dir / "pids.max") ==
          std::vector<std::string>{std::to_string(forkvm::test::kMaxProcesses)});
}

std::unique_ptr<VmProcess> clone_of_shared() { return shared_vm().process->fork(CloneOptions{}, kOpTimeout); }

// A snapshot of the shared VM, taken once (the VM process writes it
// through its jail).
const fs::path& shared_snapshot() {
    static const fs::path dir = [] {
        fs::path d = fs::temp_directory_path() / ("forkvm-jail-test." + std::to_string(::getpid()));
        fs::remove_all(d);
        shared_vm().process->snapshot(d.string(), kOpTimeout);
        return d;
    }();
    return dir;
}

// Runs a shell command that may never finish or may take its VM down.
void run_hostile(TestVm& vm, const std::string& script, std::uint32_t timeout_ms) {
    try {
        auto r = vm.run({"sh", "-c", script}, "", timeout_ms);
        MESSAGE("'" << script << "' ended: exit " << r.exit_code << ", stderr "
                    << r.stderr_data.substr(0, 200));
    } catch (const std::exception& e) {
        MESSAGE("'" << script << "' ended its VM's channel: " << std::string(e.what()));
    }
}

}  // namespace

TEST_CASE("jail: a VM process runs unprivileged, in an empty root, with namespaces of its own") {
    auto& vm = shared_vm();
    check_jailed(*vm.process);
    CHECK(vm.sh("echo alive").stdout_data == "alive\n");
}

TEST_CASE("jail: a fork clone is jailed like its parent and works at once") {
    auto clone = TestVm::adopt(clone_of_shared());
    check_jailed(*clone->process);
    CHECK(clone->process->jail_uid() == shared_vm().process->jail_uid());
    // The clone's VM (and KVM's kernel thread for it) went to the clone's
    // cgroup, not to its parent's.
    check_jailed(*shared_vm().process);
    CHECK(clone->sh("echo clone").stdout_data == "clone\n");
}

TEST_CASE("jail: a snapshot is written through the jail and handed back to the controller") {
    const fs::path& dir = shared_snapshot();
    for (const auto& e : fs::directory_iterator(dir)) {
        CAPTURE(e.path().string());
        struct stat st {};
        REQUIRE(::stat(e.path().c_str(), &st) == 0);
        CHECK(st.st_uid == ::geteuid());
    }
    CHECK(fs::exists(dir / "manifest.json"));
    auto restored = TestVm::adopt(VmProcess::restore(dir.string(), {}, forkvm::test::test_spawn_options()));
    check_jailed(*restored->process);
    CHECK(restored->process->jail_uid() != shared_vm().process->jail_uid());
    CHECK(restored->sh("echo restored").stdout_data == "restored\n");
    // Its cgroup goes with it.
    const auto dirs = restored->process->cgroup_dirs();
    restored.reset();
    for (const auto& [controller, d] : dirs) CHECK_FALSE(fs::exists(d));
}

TEST_CASE("jail: a VM process past its memory limit is killed alone, and the reason says so") {
    auto options = forkvm::test::test_spawn_options();
    options.limits.memory_max = 96ULL << 20;  // well below what the guest can fill (its /tmp: 128 MiB)
    auto small = TestVm::adopt(VmProcess::restore(shared_snapshot().string(), {}, options));
    auto neighbour = TestVm::adopt(clone_of_shared());
    run_hostile(*small, "head -c 125829120 /dev/zero > /tmp/fill", 120000);
    REQUIRE(small->process->wait_stopped(std::chrono::steady_clock::now() + kOpTimeout));
    const std::string reason = small->process->stopped_reason().value_or("");
    CAPTURE(reason);
    CHECK(reason.find("reached its memory limit (96 MiB") != std::string::npos);
    CHECK(neighbour->sh("echo neighbour").stdout_data == "neighbour\n");
    CHECK(shared_vm().sh("echo shared").stdout_data == "shared\n");
}

TEST_CASE("jail: the sandbox service reports a VM killed at its limit as broken, with the reason") {
    namespace pool = forkvm::pool;
    pool::VmProcessSourceSettings settings;
    settings.snapshot_dir = shared_snapshot().string();
    settings.spawn = forkvm::test::test_spawn_options();
    settings.spawn.limits.memory_max = 96ULL << 20;
    settings.agent_ready_within = kOpTimeout;
    settings.fork_timeout = kOpTimeout;
    pool::VmProcessSource source(settings);
    pool::PoolSettings pool_settings;
    pool_settings.min_warm = 2;
    pool_settings.max_warm = 2;
    pool_settings.refill_concurrency = 1;
    pool_settings.lease_wait = kOpTimeout;
    pool::WarmPool warm(source, pool_settings);
    pool::SandboxManager manager(warm, pool::ManagerSettings{});
    const std::string victim = manager.create("alice", {}).info.id;
    const std::string neighbour = manager.create("alice", {}).info.id;

    pool::ExecCall fill;
    fill.argv = {"sh", "-c", "head -c 125829120 /dev/zero > /tmp/fill"};
    fill.timeout = std::chrono::minutes(2);
    try {
        (void)manager.exec_buffered("alice", victim, fill, {});
    } catch (const std::exception& e) {
        MESSAGE("the filler's exec: " << std::string(e.what()));
    }
    const bool broken = forkvm::test::poll_until(
        [&] { return manager.get("alice", victim).info.state == pool::SandboxState::broken; },
        std::chrono::minutes(2));
    REQUIRE(broken);
    const std::string reason = manager.get("alice", victim).info.broken_reason;
    CAPTURE(reason);
    CHECK(reason.find("reached its memory limit (96 MiB") != std::string::npos);

    pool::ExecCall echo;
    echo.argv = {"echo", "neighbour"};
    CHECK(manager.exec_buffered("alice", neighbour, echo, {}).stdout_data == "neighbour\n");
    manager.shutdown();
    warm.shutdown();
}

TEST_CASE("jail: a guest memory bomb and a fork bomb end that sandbox at most") {
    auto neighbour = TestVm::adopt(clone_of_shared());
    for (const std::string bomb : {"cat /dev/zero | head -c 2147483648 > /tmp/x", "b() { b | b & }; b"}) {
        CAPTURE(bomb);
        auto victim = TestVm::adopt(clone_of_shared());
        run_hostile(*victim, bomb, 30000);
        // The victim either survived (guest OOM killer, full /tmp, the exec
        // timeout killing the bomb's group) or stopped with a reason; the
        // neighbour and the controller never notice.
        if (victim->process->stopped_reason()) {
            MESSAGE("victim stopped: " << *victim->process->stopped_reason());
        }
        CHECK(neighbour->sh("echo neighbour").stdout_data == "neighbour\n");
        const auto dirs = victim->process->cgroup_dirs();
        victim.reset();
        for (const auto& [controller, d] : dirs) CHECK_FALSE(fs::exists(d));
    }
}

TEST_CASE("jail: opening a host file from a VM process finds nothing") {
    auto clone = clone_of_shared();
    CHECK(clone->probe("open_etc_passwd") == "errno 2 (No such file or directory)");
    CHECK(clone->status().state == "running");
}

TEST_CASE("jail: execve, socket, ptrace, kill and an unlisted ioctl each end that VM, reported") {
    struct Probe {
        const char* name;
        const char* reported;  // in the VM's stop reason
    };
    const Probe probes[] = {
        {"execve", "forbidden system call: execve"},
        {"socket_inet", "forbidden system call: socket"},
        {"ptrace", "forbidden system call: ptrace"},
        {"signal_controller", "forbidden system call: kill"},
        {"unlisted_ioctl", "forbidden system call: ioctl request 0x"},
    };
    for (const auto& p : probes) {
        const std::string name = p.name;
        CAPTURE(name);
        auto clone = clone_of_shared();
        CHECK_THROWS_AS(clone->probe(name), VmProcessError);
        CHECK(clone->wait_stopped(std::chrono::steady_clock::now() + kOpTimeout));
        const std::string reason = clone->stopped_reason().value_or("");
        CAPTURE(reason);
        CHECK(reason.find(p.reported) != std::string::npos);
        CHECK(clone->status().state == "exited");
    }
    // The controller (this process) is up, and the parent VM answers.
    CHECK(shared_vm().sh("echo still here").stdout_data == "still here\n");
}
