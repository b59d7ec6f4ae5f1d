// The VM process seccomp filters, run for real in forked children: allowed
// calls work, a forbidden one ends the child with the report our SIGSYS
// handler writes, and log mode lets calls through.

#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "vmm/run_in_child.hpp"
#include "vmm/seccomp_filter.hpp"

using forkvm::vmm::SeccompMode;
using forkvm::vmm::ThreadRole;

namespace {

using forkvm::vmm::ChildOutcome;

// Runs `body` in a forked child under the filters for `roles`, with the
// SIGSYS handler's report going to the outcome's output; the child exits
// with body's return value (100 if a filter could not be installed).
template <typename Body>
ChildOutcome run_filtered(std::initializer_list<ThreadRole> roles, SeccompMode mode, Body body) {
    return forkvm::vmm::run_in_child([&](int report_fd) {
        forkvm::vmm::set_seccomp_report_fd(report_fd);
        try {
            for (ThreadRole r : roles) forkvm::vmm::install_seccomp(r, mode);
        } catch (...) {
            return 100;
        }
        return body();
    });
}

std::string reason_of(const ChildOutcome& r) {
    auto j = nlohmann::json::parse(r.output, nullptr, false);
    if (j.is_discarded() || j.value("event", "") != "stopped" || j.value("clean", true)) return "";
    return j.value("reason", "");
}

}  // namespace

TEST_CASE("seccomp: the control filter allows what the VMM does and reports a forbidden call") {
    auto r = run_filtered({ThreadRole::control}, SeccompMode::enforce, [] {
        if (::getpid() <= 0) return 1;
        int efd = static_cast<int>(::syscall(SYS_eventfd2, 0, 0));
        if (efd < 0) return 2;
        ::close(efd);
        // A KVM request on a non-KVM fd: the filter lets it through, the
        // kernel refuses it.
        if (::ioctl(0, KVM_GET_API_VERSION, 0) == 0) return 3;
        (void)::socket(AF_INET, SOCK_STREAM, 0);  // forbidden
        return 4;
    });
    CHECK(r.exit_code == forkvm::vmm::kSeccompViolationExit);
    CHECK(reason_of(r).find("forbidden system call: socket") != std::string::npos);
}

TEST_CASE("seccomp: an unlisted ioctl, execve, kill, fcntl F_SETOWN and ptrace are each fatal") {
    struct Case {
        const char* name;
        int (*body)();
    };
    const Case cases[] = {
        {"ioctl request 0x", [] { return ::ioctl(0, KVM_SET_GSI_ROUTING, nullptr) == 0 ? 0 : 5; }},
        {"execve",
         [] {
             char sh[] = "/bin/sh";
             char* argv[] = {sh, nullptr};
             ::execve(sh, argv, argv + 1);
             return 5;
         }},
        {"kill", [] { return ::kill(::getppid(), 0) == 0 ? 0 : 5; }},
        // F_SETOWN would aim SIGIO at another process; flags are fine.
        {"fcntl",
         [] {
             if (::fcntl(0, F_GETFL) < 0) return 6;
             return ::fcntl(0, F_SETOWN, ::getppid()) == 0 ? 0 : 5;
         }},
        {"ptrace",
         [] { return static_cast<int>(::syscall(SYS_ptrace, 16 /*PTRACE_ATTACH*/, ::getppid(), 0, 0)); }},
    };
    for (const auto& c : cases) {
        const std::string name = c.name;
        CAPTURE(name);
        auto r = run_filtered({ThreadRole::control}, SeccompMode::enforce, c.body);
        CHECK(r.exit_code == forkvm::vmm::kSeccompViolationExit);
        CAPTURE(r.output);
        CHECK(reason_of(r).find(name) != std::string::npos);
    }
}

TEST_CASE("seccomp: tgkill is limited to the vCPU kick signal") {
    auto r = run_filtered({ThreadRole::control}, SeccompMode::enforce, [] {
        ::signal(SIGUSR1, SIG_IGN);
        if (::syscall(SYS_tgkill, ::getpid(), ::gettid(), SIGUSR1) != 0) return 1;
        (void)::syscall(SYS_tgkill, ::getpid(), ::gettid(), SIGTERM);  // forbidden
        return 2;
    });
    CHECK(r.exit_code == forkvm::vmm::kSeccompViolationExit);
    CHECK(reason_of(r).find("tgkill with argument 0xf") != std::string::npos);
}

#if !defined(__SANITIZE_ADDRESS__)
// (ASan's thread start makes calls of its own, sigaltstack among them.)
TEST_CASE("seccomp: threads start under the control filter and narrow themselves to the vCPU list") {
    auto r = run_filtered({ThreadRole::control}, SeccompMode::enforce, [] {
        forkvm::vmm::set_vcpu_thread_seccomp(SeccompMode::enforce);
        int code = 0;
        std::thread t([&code] {
            forkvm::vmm::apply_vcpu_thread_seccomp();
            if (::ioctl(0, KVM_RUN, 0) == 0) code = 1;  // allowed (fails: not a vCPU fd)
            (void)::open("/etc/hostname", O_RDONLY);    // not on the vCPU list
            code = 2;
        });
        t.join();
        return code;
    });
    CHECK(r.exit_code == forkvm::vmm::kSeccompViolationExit);
    CAPTURE(r.output);
    CHECK(reason_of(r).find("openat") != std::string::npos);

    auto ok = run_filtered({ThreadRole::control}, SeccompMode::enforce, [] {
        std::thread t([] {});
        t.join();
        return 0;
    });
    CHECK(ok.exit_code == 0);
    CHECK(ok.output.empty());
}
#endif

TEST_CASE("seccomp: log mode lets a forbidden call run") {
    auto r = run_filtered({ThreadRole::control}, SeccompMode::log, [] {
        int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        return fd >= 0 ? 0 : 1;
    });
    CHECK(r.exit_code == 0);
    CHECK(r.output.empty());
}

TEST_CASE("seccomp: mode names and the program's shape") {
    CHECK(forkvm::vmm::parse_seccomp_mode("enforce") == SeccompMode::enforce);
    CHECK(forkvm::vmm::parse_seccomp_mode("log") == SeccompMode::log);
    CHECK(forkvm::vmm::parse_seccomp_mode("off") == SeccompMode::off);
    CHECK_FALSE(forkvm::vmm::parse_seccomp_mode("on").has_value());
    CHECK(forkvm::vmm::syscall_name(SYS_socket) == "socket");
    CHECK(forkvm::vmm::syscall_name(100000).empty());
    // BPF programs are limited to 4096 instructions; ours must stay far below.
    CHECK(forkvm::vmm::seccomp_program(ThreadRole::control, SeccompMode::enforce).size() < 512);
    CHECK(forkvm::vmm::seccomp_program(ThreadRole::vcpu, SeccompMode::enforce).size() <
          forkvm::vmm::seccomp_program(ThreadRole::control, SeccompMode::enforce).size());
}
