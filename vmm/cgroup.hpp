#pragma once
// Per-VM cgroups (docs/security.md §4): every VM process — spawned or
// forked — is moved into a cgroup of its own, `vm-<pid>`, with
//   - a memory limit: its guest memory plus the VMM's overhead, so a VMM
//     that allocates without bound is OOM-killed alone;
//   - a task limit (threads count): a runaway clone()/fork ends there;
//   - a CPU share: equal weight with every other VM (a spinning guest gets
//     its fair share, no more, under contention) and, optionally, a hard
//     quota in percent of one CPU.
// cgroup v2 where the host has it; else the v1 cpu, memory and pids
// hierarchies; a host with neither runs VMs without them (the server warns
// at startup).

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace forkvm::vmm {

struct CgroupLimits {
    std::uint64_t memory_max = 0;         // bytes; 0 = none
    std::uint32_t pids_max = 0;           // tasks; 0 = none
    std::uint32_t cpu_quota_percent = 0;  // of one CPU; 0 = fair share only
};

class VmCgroup;

class CgroupHost {
public:
    enum class Version { none, v1, v2 };

    // Where VM cgroups are made: for v2 one directory (key ""), whose
    // subtree has the controllers enabled; for v1 one per controller
    // ("cpu", "memory", "pids").
    struct Layout {
        Version version = Version::none;
        std::map<std::string, std::string> parents;
        std::vector<std::string> missing;  // controllers the host does not give us
    };

    // Finds this process's cgroups (/proc/self/cgroup, /proc/self/mountinfo),
    // makes the `forkvm` parent group(s) and enables the controllers. Never
    // throws: what could not be done is in describe().
    static std::shared_ptr<CgroupHost> detect();

    explicit CgroupHost(Layout layout, std::string problem = "");

    [[nodiscard]] bool enforcing() const noexcept { return layout_.version != Version::none; }
    [[nodiscard]] const Layout& layout() const noexcept { return layout_; }
    // One line for the startup log: what is enforced, or why nothing is.
    [[nodiscard]] std::string describe() const;

    // Hands the VM groups' parent to `uid`:`gid` (cgroup v2 delegation: the
    // directory with its cgroup.procs, cgroup.threads and
    // cgroup.subtree_control), and moves this process into a leaf of it,
    // forkvm-server, so that every move between its groups stays inside the
    // delegated subtree. Call as root, before dropping to `uid`. cgroup v1
    // cannot be handed over: it lets only root move another uid's process,
    // and a fork clone runs as its zygote's jail uid (throws SysError,
    // EOPNOTSUPP). Without cgroups there is nothing to do.
    void delegate(uid_t uid, gid_t gid) const;

    // Makes vm-<pid> under each parent, writes the limits, moves `pid` in.
    // Throws SysError naming the file.
    [[nodiscard]] std::unique_ptr<VmCgroup> place(pid_t pid, const CgroupLimits& limits) const;

private:
    Layout layout_;
    std::string problem_;
};

// One VM process's cgroup(s). Removed on destruction (the process must be
// gone: call after it was reaped); any process still in it is killed first.
class VmCgroup {
public:
    VmCgroup(CgroupHost::Version version, std::map<std::string, std::string> dirs);
    ~VmCgroup();
    VmCgroup(const VmCgroup&) = delete;
    VmCgroup& operator=(const VmCgroup&) = delete;

    // A directory made for `controller` ("" for v2).
    void add_dir(const std::string& controller, const std::string& dir);
    // The VM process the group was made for: its VmProcess kills and reaps
    // it; teardown only kills what else is left in the group.
    void set_owner(pid_t pid);
    // Sets the memory limit. Throws SysError.
    void set_memory_max(std::uint64_t bytes) const;
    // How often the kernel OOM-killed in this cgroup (0 when unknown).
    [[nodiscard]] std::uint64_t oom_kills() const;
    // The directory holding the memory controller's files ("" without one).
    [[nodiscard]] std::string memory_dir() const;
    [[nodiscard]] const std::map<std::string, std::string>& dirs() const noexcept { return dirs_; }

private:
    CgroupHost::Version version_;
    std::map<std::string, std::string> dirs_;  // controller ("" for v2) -> directory
    pid_t owner_ = 0;
};

}  // namespace forkvm::vmm
