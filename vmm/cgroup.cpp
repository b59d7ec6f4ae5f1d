#include "vmm/cgroup.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <fmt/format.h>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "vmm/sys_error.hpp"

namespace forkvm::vmm {
namespace {

constexpr std::array<const char*, 3> kControllers = {"cpu", "memory", "pids"};
constexpr std::uint64_t kCpuPeriodUs = 100000;

void write_text(const std::string& path, const std::string& text) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) throw SysError("open " + path, errno);
    ssize_t n = ::write(fd, text.data(), text.size());
    const int err = errno;
    ::close(fd);
    if (n != static_cast<ssize_t>(text.size()))
        throw SysError("write '" + text + "' to " + path, n < 0 ? err : EIO);
}

std::string read_text(const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

void make_dir(const std::string& path) {
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) throw SysError("mkdir " + path, errno);
}

std::vector<std::string> split(const std::string& text, char sep) {
    std::vector<std::string> out;
    std::string item;
    std::istringstream in(text);
    while (std::getline(in, item, sep))
        if (!item.empty()) out.push_back(item);
    return out;
}

// The value after `key ` on its own line of a flat-keyed file (memory.events).
std::uint64_t keyed_value(const std::string& text, const std::string& key) {
    std::istringstream in(text);
    std::string k;
    std::uint64_t v = 0;
    while (in >> k >> v)
        if (k == key) return v;
    return 0;
}

// Leftover vm-* groups of an earlier server whose VMs are gone.
void remove_stale_groups(const std::string& parent) {
    DIR* d = ::opendir(parent.c_str());
    if (d == nullptr) return;
    while (dirent* e = ::readdir(d)) {
        if (std::string_view(e->d_name).starts_with("vm-")) (void)::rmdir((parent + "/" + e->d_name).c_str());
    }
    ::closedir(d);
}

struct Mount {
    std::string root;  // the part of the hierarchy mounted ("/" unless bind-mounted from inside)
    std::string point;
    std::string fstype;
    std::vector<std::string> options;  // super options (v1: the controllers)
};

std::vector<Mount> cgroup_mounts() {
    std::vector<Mount> mounts;
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        // id parent maj:min root point options [optional...] - fstype source super
        auto fields = split(line, ' ');
        auto dash = std::find(fields.begin(), fields.end(), "-");
        if (fields.size() < 5 || dash == fields.end() || fields.end() - dash < 4) continue;
        const std::string& fstype = *(dash + 1);
        if (fstype != "cgroup" && fstype != "cgroup2") continue;
        mounts.push_back({fields[3], fields[4], fstype, split(*(dash + 3), ',')});
    }
    return mounts;
}

// /proc/self/cgroup: controller list ("" for v2) -> our path.
std::map<std::string, std::string> own_cgroups() {
    std::map<std::string, std::string> paths;
    std::ifstream in("/proc/self/cgroup");
    std::string line;
    while (std::getline(in, line)) {
        auto first = line.find(':');
        auto second = line.find(':', first + 1);
        if (first == std::string::npos || second == std::string::npos) continue;
        const std::string controllers = line.substr(first + 1, second - first - 1);
        const std::string path = line.substr(second + 1);
        if (controllers.empty()) {
            paths[""] = path;
        } else {
            for (const auto& c : split(controllers, ',')) paths[c] = path;
        }
    }
    return paths;
}

// Where our group `path` (as /proc/self/cgroup names it) is under `mount`.
std::string join(const Mount& mount, const std::string& path) {
    std::string rel = path;
    if (mount.root != "/" && rel.starts_with(mount.root)) rel = rel.substr(mount.root.size());
    return rel.empty() || rel == "/" ? mount.point : mount.point + rel;
}

void enable_controllers(const std::string& dir, const std::vector<std::string>& controllers) {
    std::string text;
    for (const auto& c : controllers) text += (text.empty() ? "+" : " +") + c;
    write_text(dir + "/cgroup.subtree_control", text);
}

// cgroup v2: enable our controllers below our own group and make the parent
// of VM groups. A non-root group with processes in it cannot enable
// controllers for its children ("no internal processes"): we move
// ourselves into a leaf first, as a service with delegated cgroups does.
CgroupHost::Layout setup_v2(const Mount& mount, const std::string& own_path, std::string& problem) {
    CgroupHost::Layout layout;
    const std::string own = join(mount, own_path);
    const std::set<std::string> available = [&] {
        auto list = split(read_text(own + "/cgroup.controllers"), ' ');
        for (auto& c : list) c.erase(c.find_last_not_of("\n") + 1);
        return std::set<std::string>(list.begin(), list.end());
    }();
    std::vector<std::string> use;
    for (const char* c : kControllers) {
        if (available.contains(c)) {
            use.emplace_back(c);
        } else {
            layout.missing.emplace_back(c);
        }
    }
    if (use.empty()) {
        problem = "cgroup v2 at " + mount.point + " offers none of cpu, memory, pids to this process";
        return {};
    }
    try {
        try {
            enable_controllers(own, use);
        } catch (const SysError& e) {
            // Not the root group (which is exempt), and we live in it.
            if (e.err() != EBUSY) throw;
            make_dir(own + "/forkvm-server");
            write_text(own + "/forkvm-server/cgroup.procs", std::to_string(::getpid()));
            enable_controllers(own, use);
        }
        const std::string parent = own + "/forkvm";
        make_dir(parent);
        enable_controllers(parent, use);
        remove_stale_groups(parent);
        layout.version = CgroupHost::Version::v2;
        layout.parents[""] = parent;
    } catch (const SysError& e) {
        problem = std::string("cgroup v2: ") + e.what();
        return {};
    }
    return layout;
}

CgroupHost::Layout setup_v1(const std::vector<Mount>& mounts, const std::map<std::string, std::string>& own,
                            std::string& problem) {
    CgroupHost::Layout layout;
    for (const char* c : kControllers) {
        auto m = std::find_if(mounts.begin(), mounts.end(), [&](const Mount& mt) {
            return mt.fstype == "cgroup" &&
                   std::find(mt.options.begin(), mt.options.end(), c) != mt.options.end();
        });
        auto path = own.find(c);
        if (m == mounts.end() || path == own.end()) {
            layout.missing.emplace_back(c);
            continue;
        }
        const std::string parent = join(*m, path->second) + "/forkvm";
        try {
            make_dir(parent);
            remove_stale_groups(parent);
            layout.parents[c] = parent;
        } catch (const SysError& e) {
            problem += std::string(problem.empty() ? "" : "; ") + "cgroup v1 " + c + ": " + e.what();
            layout.missing.emplace_back(c);
        }
    }
    if (!layout.parents.empty()) layout.version = CgroupHost::Version::v1;
    return layout;
}

}  // namespace

std::shared_ptr<CgroupHost> CgroupHost::detect() {
    const auto mounts = cgroup_mounts();
    const auto own = own_cgroups();
    std::string problem;
    auto v2 =
        std::find_if(mounts.begin(), mounts.end(), [](const Mount& m) { return m.fstype == "cgroup2"; });
    if (v2 != mounts.end() && own.contains("")) {
        Layout layout = setup_v2(*v2, own.at(""), problem);
        if (layout.version == Version::v2) return std::make_shared<CgroupHost>(std::move(layout));
    }
    Layout layout = setup_v1(mounts, own, problem);
    if (layout.version == Version::none && problem.empty())
        problem = "no cgroup v2 or v1 cpu/memory/pids mounted";
    return std::make_shared<CgroupHost>(std::move(layout), problem);
}

CgroupHost::CgroupHost(Layout layout, std::string problem)
    : layout_(std::move(layout)), problem_(std::move(problem)) {}

std::string CgroupHost::describe() const {
    if (!enforcing())
        return "no per-VM cgroups (" + problem_ + "): VM processes run without memory, task and CPU limits";
    std::string text = layout_.version == Version::v2 ? "cgroup v2 under " + layout_.parents.at("")
                                                      : std::string("cgroup v1 (");
    if (layout_.version == Version::v1) {
        bool first = true;
        for (const auto& [c, dir] : layout_.parents) {
            text += (first ? "" : ", ") + c + " under " + dir;
            first = false;
        }
        text += ")";
    }
    if (!layout_.missing.empty()) {
        text += "; missing controllers:";
        for (const auto& c : layout_.missing) text += " " + c;
        text += " (those limits are not enforced)";
    }
    return text;
}

void CgroupHost::delegate(uid_t uid, gid_t gid) const {
    if (layout_.version == Version::none) return;
    if (layout_.version == Version::v1) {
        throw SysError(
            "cgroup v1 cannot be handed to an unprivileged server (only root may move another uid's "
            "process between v1 groups, and fork clones run as their zygote's jail uid): use a host with "
            "cgroup v2, or run the server as root",
            EOPNOTSUPP);
    }
    const std::string parent = layout_.parents.at("");
    const std::string leaf = parent + "/forkvm-server";
    make_dir(leaf);
    write_text(leaf + "/cgroup.procs", std::to_string(::getpid()));
    auto give = [&](const std::string& path) {
        if (::chown(path.c_str(), uid, gid) != 0) throw SysError("chown " + path, errno);
    };
    for (const char* file : {"", "/cgroup.procs", "/cgroup.threads", "/cgroup.subtree_control"}) {
        give(parent + file);
    }
    for (const char* file : {"", "/cgroup.procs", "/cgroup.threads"}) give(leaf + file);
}

std::unique_ptr<VmCgroup> CgroupHost::place(pid_t pid, const CgroupLimits& limits) const {
    if (!enforcing()) return nullptr;
    const std::string name = "vm-" + std::to_string(pid);
    // Each directory joins the group as soon as it exists, so a failure
    // half-way removes what was made (~VmCgroup).
    auto group = std::make_unique<VmCgroup>(layout_.version, std::map<std::string, std::string>{});
    group->set_owner(pid);
    for (const auto& [controller, parent] : layout_.parents) {
        const std::string dir = parent + "/" + name;
        // A leftover of a pid used before (its processes gone) is removed;
        // one still in use is an error, never shared.
        if (::mkdir(dir.c_str(), 0755) != 0) {
            if (errno != EEXIST || ::rmdir(dir.c_str()) != 0 || ::mkdir(dir.c_str(), 0755) != 0)
                throw SysError("mkdir " + dir, errno);
        }
        group->add_dir(controller, dir);
    }
    const bool v2 = layout_.version == Version::v2;
    const auto& dirs = group->dirs();
    auto dir_of = [&](const std::string& controller) { return dirs.at(v2 ? "" : controller); };
    auto present = [&](const std::string& controller) {
        return std::find(layout_.missing.begin(), layout_.missing.end(), controller) == layout_.missing.end();
    };
    if (limits.memory_max != 0 && present("memory")) group->set_memory_max(limits.memory_max);
    if (limits.pids_max != 0 && present("pids"))
        write_text(dir_of("pids") + "/pids.max", std::to_string(limits.pids_max));
    if (limits.cpu_quota_percent != 0 && present("cpu")) {
        const std::uint64_t quota = kCpuPeriodUs * limits.cpu_quota_percent / 100;
        if (v2) {
            write_text(dir_of("cpu") + "/cpu.max", fmt::format("{} {}", quota, kCpuPeriodUs));
        } else {
            write_text(dir_of("cpu") + "/cpu.cfs_period_us", std::to_string(kCpuPeriodUs));
            write_text(dir_of("cpu") + "/cpu.cfs_quota_us", std::to_string(quota));
        }
    }
    for (const auto& [controller, dir] : dirs) write_text(dir + "/cgroup.procs", std::to_string(pid));
    return group;
}

VmCgroup::VmCgroup(CgroupHost::Version version, std::map<std::string, std::string> dirs)
    : version_(version), dirs_(std::move(dirs)) {}

void VmCgroup::add_dir(const std::string& controller, const std::string& dir) { dirs_[controller] = dir; }
void VmCgroup::set_owner(pid_t pid) { owner_ = pid; }

VmCgroup::~VmCgroup() {
    // The VM process is reaped by now; anything still in its group is what
    // it started behind our back (a clone() of its own): kill it too, then
    // reap it if it is our child (CLONE_PARENT made it one).
    for (const auto& [controller, dir] : dirs_) {
        const std::string procs = read_text(dir + "/cgroup.procs");
        std::vector<pid_t> left;
        std::istringstream in(procs);
        for (long pid = 0; in >> pid;)
            if (pid > 0 && pid != owner_) left.push_back(static_cast<pid_t>(pid));
        for (pid_t pid : left) ::kill(pid, SIGKILL);
        for (pid_t pid : left) {
            int status = 0;
            for (int attempt = 0; attempt < 50; ++attempt) {
                const pid_t r = ::waitpid(pid, &status, WNOHANG);
                if (r != 0) break;  // reaped, or not our child
                std::this_thread::sleep_for(std::chrono::milliseconds(2));
            }
        }
        // Empty once they are gone; the kernel may lag a moment.
        for (int attempt = 0; attempt < 20; ++attempt) {
            if (::rmdir(dir.c_str()) == 0 || errno != EBUSY) break;
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
    }
}

std::string VmCgroup::memory_dir() const {
    auto it = dirs_.find(version_ == CgroupHost::Version::v2 ? "" : "memory");
    return it == dirs_.end() ? "" : it->second;
}

void VmCgroup::set_memory_max(std::uint64_t bytes) const {
    const std::string dir = memory_dir();
    if (dir.empty()) return;
    if (version_ == CgroupHost::Version::v2) {
        write_text(dir + "/memory.max", std::to_string(bytes));
        // Reaching the limit must end the VM, not push it into swap.
        if (::access((dir + "/memory.swap.max").c_str(), F_OK) == 0)
            write_text(dir + "/memory.swap.max", "0");
    } else {
        write_text(dir + "/memory.limit_in_bytes", std::to_string(bytes));
    }
}

std::uint64_t VmCgroup::oom_kills() const {
    const std::string dir = memory_dir();
    if (dir.empty()) return 0;
    return keyed_value(
        read_text(dir + (version_ == CgroupHost::Version::v2 ? "/memory.events" : "/memory.oom_control")),
        "oom_kill");
}

}  // namespace forkvm::vmm
