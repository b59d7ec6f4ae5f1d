#include "vm_fixture.hpp"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>

extern char** environ;

#ifndef FORKVM_TEST_BINARY
#error "FORKVM_TEST_BINARY must be defined by the build"
#endif

namespace forkvm::test {

vmm::VmConfig test_vm_config(std::uint64_t memory_mb, vmm::AgentChannel channel) {
    vmm::VmConfig c;
    c.memory_mb = memory_mb;
    c.agent_channel = channel;
    c.kernel_path = FORKVM_TEST_KERNEL;
    c.initrd_path = FORKVM_TEST_INITRD;
    return c;
}

vmm::SpawnOptions test_spawn_options() {
    vmm::SpawnOptions o;
    o.forkvm_binary = FORKVM_TEST_BINARY;
    o.boot_timeout = kBootTimeout;
    // Every kvm test runs its VMs as production does: jailed, seccomp on.
    o.jail.enabled = true;
    o.jail.uid_base = kJailUidBase;
    o.jail.uid_count = 4096;
    // FORKVM_TEST_SECCOMP=log runs them with the kernel logging what the
    // filter lacks instead (docs/security.md: keeping the list tight).
    const char* mode = std::getenv("FORKVM_TEST_SECCOMP");
    o.jail.seccomp =
        vmm::parse_seccomp_mode(mode != nullptr ? mode : "enforce").value_or(vmm::SeccompMode::enforce);
    // And in cgroups of their own, as `forkvm serve` puts them.
    static const std::shared_ptr<const vmm::CgroupHost> cgroups = vmm::CgroupHost::detect();
    o.limits.cgroups = cgroups;
    o.limits.memory_overhead = kMemoryOverhead;
    o.limits.pids_max = kMaxProcesses;
    return o;
}

std::unique_ptr<TestVm> TestVm::boot(std::uint64_t memory_mb, vmm::AgentChannel channel) {
    auto vm = std::make_unique<TestVm>();
    vm->process = vmm::VmProcess::spawn(test_vm_config(memory_mb, channel), test_spawn_options());
    vm->agent = std::make_unique<vmm::AgentClient>(vm->process->take_agent_fd());
    try {
        vm->agent->wait_ready(kBootTimeout);
    } catch (...) {
        MESSAGE("guest console:\n" << vm->process->console_tail());
        throw;
    }
    return vm;
}

std::unique_ptr<TestVm> TestVm::adopt(std::unique_ptr<vmm::VmProcess> process) {
    auto vm = std::make_unique<TestVm>();
    vm->process = std::move(process);
    vm->agent = std::make_unique<vmm::AgentClient>(vm->process->take_agent_fd());
    try {
        (void)vm->agent->ping(kBootTimeout);
    } catch (...) {
        MESSAGE("guest console:\n" << vm->process->console_tail());
        throw;
    }
    return vm;
}

vmm::BufferedExecResult TestVm::run(std::vector<std::string> argv, std::string user,
                                    std::uint32_t timeout_ms) {
    vmm::ExecRequest req;
    req.argv = std::move(argv);
    req.user = std::move(user);
    req.timeout_ms = timeout_ms;
    return agent->exec_buffered(req, kOpTimeout);
}

vmm::BufferedExecResult TestVm::sh(const std::string& script) { return run({"sh", "-c", script}, "root"); }

std::vector<pid_t> children_of(pid_t parent) {
    std::vector<pid_t> out;
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
        const std::string name = e.path().filename();
        if (name.find_first_not_of("0123456789") != std::string::npos) continue;
        std::ifstream in(e.path() / "stat");
        std::string stat;
        std::getline(in, stat);
        auto close = stat.rfind(')');
        if (close == std::string::npos) continue;
        char state = 0;
        long ppid = 0;
        if (std::sscanf(stat.c_str() + close + 1, " %c %ld", &state, &ppid) == 2 && ppid == parent)
            out.push_back(static_cast<pid_t>(std::stol(name)));
    }
    return out;
}

std::string status_field(pid_t pid, const std::string& name) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(name + ":", 0) == 0) {
            std::string value = line.substr(name.size() + 1);
            value.erase(0, value.find_first_not_of(" \t"));
            return value;
        }
    }
    return "";
}

std::vector<pid_t> kill_controller_with_vms(std::vector<std::string> args, std::size_t vm_count) {
    args.insert(args.begin(), FORKVM_TEST_BINARY);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t controller = 0;
    REQUIRE(::posix_spawn(&controller, FORKVM_TEST_BINARY, nullptr, nullptr, argv.data(), environ) == 0);
    std::vector<pid_t> vms;
    const bool started = poll_until([&] { return (vms = children_of(controller)).size() >= vm_count; },
                                    std::chrono::seconds(600));
    ::kill(controller, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(controller, &status, 0) == controller);
    REQUIRE_MESSAGE(started, "the controller never had " << vm_count << " VM processes");
    return vms;
}

bool all_reaped(const std::vector<pid_t>& pids, std::chrono::seconds limit) {
    std::vector<pid_t> left = pids;
    poll_until(
        [&] {
            std::erase_if(left, [](pid_t p) {
                int status = 0;
                pid_t r = ::waitpid(p, &status, WNOHANG);
                return r == p || (r < 0 && errno == ECHILD);
            });
            return left.empty();
        },
        limit);
    for (pid_t p : left) ::kill(p, SIGKILL);
    return left.empty();
}

TestVm& shared_vm() {
    static std::unique_ptr<TestVm> vm = TestVm::boot();
    return *vm;
}

}  // namespace forkvm::test
