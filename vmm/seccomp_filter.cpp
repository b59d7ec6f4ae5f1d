#include "vmm/seccomp_filter.hpp"

#include <fcntl.h>
#include <linux/audit.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/ucontext.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <utility>

#include "vmm/kvm_abi.hpp"
#include "vmm/sys_error.hpp"

namespace forkvm::vmm {
namespace {

// ---------------------------------------------------------------------------
// What each role may call. Every entry says why the VMM needs it; keep it
// that way, and run the kvm tests with seccomp "log" to find what is missing
// (docs/security.md).

struct Allowed {
    long nr;
    const char* why;
};

// Calls both roles make.
constexpr std::array kCommonCalls = {
    Allowed{SYS_read, "agent socket, eventfd"},
    Allowed{SYS_write, "agent and console bytes, eventfd wake-ups, log lines, the SIGSYS report"},
    Allowed{SYS_futex, "mutexes and condition variables"},
    Allowed{SYS_mmap, "the allocator"},
    Allowed{SYS_munmap, "the allocator, thread stacks"},
    Allowed{SYS_mprotect, "the allocator (new arenas), thread stack guards"},
    Allowed{SYS_mremap, "the allocator (realloc of large blocks)"},
    Allowed{SYS_madvise, "the allocator and thread exit return memory"},
    Allowed{SYS_brk, "the allocator"},
    Allowed{SYS_rt_sigreturn, "return from the vCPU kick and SIGSYS handlers"},
    Allowed{SYS_rt_sigprocmask, "glibc masks signals around thread start and exit"},
    Allowed{SYS_clock_gettime, "timestamps (vDSO fallback)"},
    Allowed{SYS_gettimeofday, "timestamps (vDSO fallback)"},
    Allowed{SYS_getpid, "log lines, pthread_kill"},
    Allowed{SYS_gettid, "log lines, pthread_kill"},
    Allowed{SYS_sched_yield, "spin-then-wait locks"},
    Allowed{SYS_exit, "a thread ends"},
    Allowed{SYS_exit_group, "the process ends (also from the SIGSYS handler)"},
    Allowed{SYS_restart_syscall, "a call interrupted by the kick signal resumes"},
};

// Calls only the control thread makes (and the threads it starts, before
// they narrow themselves to the vCPU list).
constexpr std::array kControlCalls = {
    Allowed{SYS_close, "fds of ended requests, a fork child's copies of its parent's fds"},
    Allowed{SYS_sendmsg, "control socket replies and events"},
    Allowed{SYS_recvmsg, "control socket requests (with passed fds)"},
    Allowed{SYS_recvfrom, "control socket: size of the next request (MSG_PEEK)"},
    Allowed{SYS_sendto, "control socket"},
    Allowed{SYS_epoll_wait, "the event loop"},
    Allowed{SYS_epoll_pwait, "the event loop"},
    Allowed{SYS_epoll_ctl, "the event loop"},
    Allowed{SYS_epoll_create1, "a fork child builds its own event loop"},
    Allowed{SYS_eventfd2, "a fork child builds its own machine"},
    Allowed{SYS_rt_sigaction, "a fork child installs the vCPU kick handler"},
    Allowed{SYS_getppid, "a fork child checks that its controller is alive"},
    Allowed{SYS_set_robust_list, "new vCPU threads (glibc)"},
    Allowed{SYS_rseq, "new vCPU threads (glibc)"},
    Allowed{SYS_seccomp, "a new vCPU thread adds the vCPU filter (filters only ever narrow)"},
    Allowed{SYS_getrandom, "fresh entropy for clones, temporary file names"},
    Allowed{SYS_nanosleep, "short waits"},
    Allowed{SYS_clock_nanosleep, "short waits"},
    // Files: a snapshot is written into the directory the controller passed
    // (fchdir); the jail's root is empty.
    Allowed{SYS_openat, "snapshot files"},
    Allowed{SYS_fstat, "snapshot files"},
    Allowed{SYS_newfstatat, "snapshot directory checks"},
    Allowed{SYS_statx, "snapshot directory checks"},
    Allowed{SYS_access, "a snapshot directory must not hold a snapshot already"},
    Allowed{SYS_faccessat, "as access"},
    Allowed{SYS_faccessat2, "as access"},
    Allowed{SYS_lseek, "snapshot files"},
    Allowed{SYS_pwrite64, "memory.bin (sparse)"},
    Allowed{SYS_ftruncate, "memory.bin's size"},
    Allowed{SYS_fsync, "snapshot files and their directory"},
    Allowed{SYS_fdatasync, "snapshot files"},
    Allowed{SYS_rename, "snapshot files are written and renamed into place"},
    Allowed{SYS_renameat, "as rename"},
    Allowed{SYS_renameat2, "as rename"},
    Allowed{SYS_unlink, "a failed snapshot removes its files"},
    Allowed{SYS_unlinkat, "as unlink"},
    Allowed{SYS_mkdir, "the snapshot directory (exists already; checked)"},
    Allowed{SYS_mkdirat, "as mkdir"},
    Allowed{SYS_fchdir, "into the snapshot directory the controller passed"},
    Allowed{SYS_chdir, "back to the jail's root"},
};

// KVM requests, by the fd they go to. The control thread builds, saves and
// restores VMs; a vCPU thread runs its vCPU and raises device interrupts.
constexpr auto kControlIoctls = std::to_array<unsigned long>({
    KVM_GET_API_VERSION,
    KVM_CHECK_EXTENSION,
    KVM_GET_VCPU_MMAP_SIZE,
    abi::kGetSupportedCpuid,
    abi::kGetMsrIndexList,
    KVM_CREATE_VM,
    KVM_SET_USER_MEMORY_REGION,
    KVM_SET_TSS_ADDR,
    KVM_SET_IDENTITY_MAP_ADDR,
    KVM_CREATE_IRQCHIP,
    KVM_CREATE_PIT2,
    KVM_IRQ_LINE,
    KVM_GET_IRQCHIP,
    KVM_SET_IRQCHIP,
    KVM_GET_PIT2,
    KVM_SET_PIT2,
    KVM_GET_CLOCK,
    KVM_SET_CLOCK,
    KVM_CREATE_VCPU,
    KVM_GET_REGS,
    KVM_SET_REGS,
    KVM_GET_SREGS,
    KVM_SET_SREGS,
    abi::kSetCpuid2,
    abi::kGetCpuid2,
    KVM_GET_LAPIC,
    KVM_SET_LAPIC,
    KVM_GET_FPU,
    KVM_SET_FPU,
    KVM_GET_MP_STATE,
    KVM_SET_MP_STATE,
    abi::kGetXsave,
    abi::kGetXsave2,
    abi::kSetXsave,
    KVM_GET_XCRS,
    KVM_SET_XCRS,
    KVM_GET_DEBUGREGS,
    KVM_SET_DEBUGREGS,
    KVM_GET_VCPU_EVENTS,
    KVM_SET_VCPU_EVENTS,
    abi::kGetMsrs,
    abi::kSetMsrs,
    KVM_GET_TSC_KHZ,
    KVM_SET_TSC_KHZ,
});

constexpr auto kVcpuIoctls = std::to_array<unsigned long>({
    TCGETS,  // the one tty request: glibc's isatty() on a stdio stream's first write (log lines)
    KVM_RUN,
    KVM_IRQ_LINE,   // a device's interrupt, raised during its exit
    KVM_GET_REGS,   // register summary when the vCPU fails
    KVM_GET_SREGS,  // same
});

// glibc's pthread_create (clone3 refused with ENOSYS, so it falls back to
// clone with these flags), and the sibling fork.
constexpr unsigned long kThreadCloneFlags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SYSVSEM |
                                            CLONE_SIGHAND | CLONE_THREAD | CLONE_SETTLS |
                                            CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;
constexpr unsigned long kSiblingForkFlags = CLONE_PARENT | SIGCHLD;
constexpr int kKickSignal = SIGUSR1;  // vmm/vcpu_runner.cpp

// ---------------------------------------------------------------------------
// A tiny BPF assembler: checks in a row, each "jeq K → next-but-one".

constexpr std::uint32_t kArgLow(int i) {
    return static_cast<std::uint32_t>(offsetof(seccomp_data, args) + 8 * static_cast<unsigned>(i));
}

class Assembler {
public:
    void load(std::uint32_t offset) { code_.push_back(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offset)); }
    void ret(std::uint32_t action) { code_.push_back(BPF_STMT(BPF_RET | BPF_K, action)); }
    // if (A == k) return action;
    void ret_if(std::uint32_t k, std::uint32_t action) {
        code_.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, k, 0, 1));
        ret(action);
    }
    // if (A != k) return action;
    void ret_unless(std::uint32_t k, std::uint32_t action) {
        code_.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, k, 1, 0));
        ret(action);
    }
    // if (A >= k) return action;
    void ret_if_at_least(std::uint32_t k, std::uint32_t action) {
        code_.push_back(BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, k, 0, 1));
        ret(action);
    }
    // if (A == k) goto section; resolved by place().
    void goto_if(std::uint32_t k, int section) {
        code_.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, k, 0, 1));
        fixups_.emplace_back(code_.size(), section);
        code_.push_back(BPF_STMT(BPF_JMP | BPF_JA, 0));
    }
    void place(int section) {
        for (auto& [at, s] : fixups_) {
            if (s == section) code_[at].k = static_cast<std::uint32_t>(code_.size() - at - 1);
        }
    }
    std::vector<sock_filter> take() { return std::move(code_); }

private:
    std::vector<sock_filter> code_;
    std::vector<std::pair<std::size_t, int>> fixups_;
};

enum Section { kIoctl, kClone, kTgkill, kPrctl, kFcntl };

std::uint32_t low32(unsigned long v) { return static_cast<std::uint32_t>(v); }

std::atomic<int> g_report_fd{-1};
std::atomic<SeccompMode> g_vcpu_mode{SeccompMode::off};

// Async-signal-safe text building for the SIGSYS report.
struct Text {
    std::array<char, 320> buf{};
    std::size_t len = 0;
    void put(const char* s) {
        while (*s && len < buf.size()) buf[len++] = *s++;
    }
    void put(std::string_view s) {
        for (char c : s)
            if (len < buf.size()) buf[len++] = c;
    }
    void number(unsigned long v, unsigned base) {
        char tmp[24];
        int n = 0;
        do {
            tmp[n++] = "0123456789abcdef"[v % base];
            v /= base;
        } while (v != 0 && n < 24);
        if (base == 16) put("0x");
        while (n > 0 && len < buf.size()) buf[len++] = tmp[--n];
    }
};

void on_sigsys(int /*signo*/, siginfo_t* info, void* context) {
    const long nr = info->si_syscall;
    Text t;
    t.put(
        R"({"event":"stopped","clean":false,"reason":"seccomp: the VM process made a forbidden system call: )");
    std::string_view name = syscall_name(nr);
    if (name.empty()) {
        t.put("number ");
        t.number(static_cast<unsigned long>(nr), 10);
    } else {
        t.put(name);
    }
    if (nr == SYS_ioctl && context != nullptr) {
        const auto* uc = static_cast<const ucontext_t*>(context);
        t.put(" request ");
        t.number(static_cast<unsigned long>(uc->uc_mcontext.gregs[REG_RSI]) & 0xffffffffUL, 16);
    } else if ((nr == SYS_openat || nr == SYS_open) && context != nullptr) {
        // The path names what wanted a file (our own memory, so safe to read).
        const auto* uc = static_cast<const ucontext_t*>(context);
        const auto* path =
            reinterpret_cast<const char*>(uc->uc_mcontext.gregs[nr == SYS_openat ? REG_RSI : REG_RDI]);
        if (path != nullptr) {
            t.put(" of ");
            std::size_t n = 0;
            while (n < 96 && path[n] != '\0') ++n;
            for (std::size_t i = 0; i < n; ++i) {
                const char c = path[i];
                t.put(std::string_view(&c, 1).find_first_of("\"\\") == 0 || c < 0x20
                          ? std::string_view("?")
                          : std::string_view(&c, 1));
            }
        }
    } else if ((nr == SYS_tgkill || nr == SYS_clone || nr == SYS_prctl) && context != nullptr) {
        const auto* uc = static_cast<const ucontext_t*>(context);
        t.put(" with argument ");
        const int reg = nr == SYS_tgkill ? REG_RDX : REG_RDI;
        t.number(static_cast<unsigned long>(uc->uc_mcontext.gregs[reg]), 16);
    }
    t.put(R"("})");
    const int fd = g_report_fd.load();
    if (fd >= 0) (void)!::write(fd, t.buf.data(), t.len);
    ::syscall(SYS_exit_group, kSeccompViolationExit);
}

void install_sigsys_handler() {
    struct sigaction sa {};
    sa.sa_sigaction = on_sigsys;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_SIGINFO;
    if (::sigaction(SIGSYS, &sa, nullptr) != 0) throw SysError("sigaction SIGSYS", errno);
}

}  // namespace

std::optional<SeccompMode> parse_seccomp_mode(std::string_view text) {
    if (text == "off") return SeccompMode::off;
    if (text == "log") return SeccompMode::log;
    if (text == "enforce") return SeccompMode::enforce;
    return std::nullopt;
}

std::string_view seccomp_mode_name(SeccompMode mode) {
    switch (mode) {
        case SeccompMode::off: return "off";
        case SeccompMode::log: return "log";
        case SeccompMode::enforce: return "enforce";
    }
    return "?";
}

std::vector<sock_filter> seccomp_program(ThreadRole role, SeccompMode mode) {
    const std::uint32_t allow = SECCOMP_RET_ALLOW;
    const std::uint32_t deny = mode == SeccompMode::log ? SECCOMP_RET_LOG : SECCOMP_RET_TRAP;
    const bool control = role == ThreadRole::control;
    Assembler a;
    // Only x86-64 calls, and not the x32 ABI's numbers (bit 30).
    a.load(offsetof(seccomp_data, arch));
    a.ret_unless(AUDIT_ARCH_X86_64, SECCOMP_RET_KILL_PROCESS);
    a.load(offsetof(seccomp_data, nr));
    a.ret_if_at_least(0x40000000U, SECCOMP_RET_KILL_PROCESS);
    for (const auto& c : kCommonCalls) a.ret_if(static_cast<std::uint32_t>(c.nr), allow);
    if (control) {
        for (const auto& c : kControlCalls) a.ret_if(static_cast<std::uint32_t>(c.nr), allow);
        a.goto_if(SYS_clone, kClone);
        a.goto_if(SYS_prctl, kPrctl);
        a.goto_if(SYS_fcntl, kFcntl);
        // glibc falls back to clone, whose flags a filter can read (clone3
        // passes them in memory, out of a filter's reach).
        a.ret_if(SYS_clone3, SECCOMP_RET_ERRNO | ENOSYS);
    }
    a.goto_if(SYS_ioctl, kIoctl);
    a.goto_if(SYS_tgkill, kTgkill);
    a.ret(deny);

    a.place(kIoctl);
    a.load(kArgLow(1));  // the kernel reads the request as 32 bits
    if (control) {
        for (unsigned long r : kControlIoctls) a.ret_if(low32(r), allow);
    }
    for (unsigned long r : kVcpuIoctls) a.ret_if(low32(r), allow);
    a.ret(deny);

    a.place(kTgkill);
    a.load(kArgLow(2));  // only the vCPU kick signal (pthread_kill)
    a.ret_if(kKickSignal, allow);
    a.ret(deny);

    if (control) {
        a.place(kClone);
        a.load(kArgLow(0));
        a.ret_if(low32(kThreadCloneFlags), allow);
        a.ret_if(low32(kSiblingForkFlags), allow);
        a.ret(deny);

        a.place(kPrctl);
        a.load(kArgLow(0));
        a.ret_if(PR_SET_PDEATHSIG, allow);  // a fork child dies with the controller
        a.ret(deny);

        // Flags only (non-blocking sockets, close-on-exec): F_SETOWN,
        // F_SETSIG & co. would let a process aim signals at same-uid
        // siblings.
        a.place(kFcntl);
        a.load(kArgLow(1));
        for (int cmd : {F_GETFD, F_SETFD, F_GETFL, F_SETFL}) a.ret_if(static_cast<std::uint32_t>(cmd), allow);
        a.ret(deny);
    }
    return a.take();
}

void set_seccomp_report_fd(int fd) { g_report_fd.store(fd); }

void install_seccomp(ThreadRole role, SeccompMode mode) {
    if (mode == SeccompMode::off) return;
    if (mode == SeccompMode::enforce) install_sigsys_handler();
    std::vector<sock_filter> code = seccomp_program(role, mode);
    sock_fprog prog{};
    prog.len = static_cast<unsigned short>(code.size());
    prog.filter = code.data();
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) throw SysError("prctl PR_SET_NO_NEW_PRIVS", errno);
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) throw SysError("seccomp", errno);
}

void set_vcpu_thread_seccomp(SeccompMode mode) { g_vcpu_mode.store(mode); }

void apply_vcpu_thread_seccomp() {
    const SeccompMode mode = g_vcpu_mode.load();
    if (mode == SeccompMode::off) return;
    std::vector<sock_filter> code = seccomp_program(ThreadRole::vcpu, mode);
    sock_fprog prog{};
    prog.len = static_cast<unsigned short>(code.size());
    prog.filter = code.data();
    // The control filter is in place already (and no_new_privs with it):
    // this one only narrows. Should it fail, the VM must not run with the
    // wider list on a vCPU thread: report and end the process.
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) {
        static constexpr char kReport[] =
            R"({"event":"stopped","clean":false,"reason":"seccomp: a vCPU thread could not install its filter"})";
        const int fd = g_report_fd.load();
        if (fd >= 0) (void)!::write(fd, kReport, sizeof kReport - 1);
        ::syscall(SYS_exit_group, kSeccompViolationExit);
    }
}

std::string_view syscall_name(long nr) {
    struct Name {
        long nr;
        const char* name;
    };
    static constexpr Name kNames[] = {
        {SYS_read, "read"},
        {SYS_write, "write"},
        {SYS_open, "open"},
        {SYS_close, "close"},
        {SYS_stat, "stat"},
        {SYS_fstat, "fstat"},
        {SYS_lstat, "lstat"},
        {SYS_poll, "poll"},
        {SYS_lseek, "lseek"},
        {SYS_mmap, "mmap"},
        {SYS_mprotect, "mprotect"},
        {SYS_munmap, "munmap"},
        {SYS_brk, "brk"},
        {SYS_rt_sigaction, "rt_sigaction"},
        {SYS_rt_sigprocmask, "rt_sigprocmask"},
        {SYS_ioctl, "ioctl"},
        {SYS_pread64, "pread64"},
        {SYS_pwrite64, "pwrite64"},
        {SYS_readv, "readv"},
        {SYS_writev, "writev"},
        {SYS_access, "access"},
        {SYS_pipe, "pipe"},
        {SYS_select, "select"},
        {SYS_mremap, "mremap"},
        {SYS_madvise, "madvise"},
        {SYS_dup, "dup"},
        {SYS_dup2, "dup2"},
        {SYS_nanosleep, "nanosleep"},
        {SYS_getpid, "getpid"},
        {SYS_socket, "socket"},
        {SYS_connect, "connect"},
        {SYS_accept, "accept"},
        {SYS_sendto, "sendto"},
        {SYS_recvfrom, "recvfrom"},
        {SYS_sendmsg, "sendmsg"},
        {SYS_recvmsg, "recvmsg"},
        {SYS_bind, "bind"},
        {SYS_listen, "listen"},
        {SYS_socketpair, "socketpair"},
        {SYS_clone, "clone"},
        {SYS_fork, "fork"},
        {SYS_vfork, "vfork"},
        {SYS_execve, "execve"},
        {SYS_exit, "exit"},
        {SYS_wait4, "wait4"},
        {SYS_kill, "kill"},
        {SYS_uname, "uname"},
        {SYS_fcntl, "fcntl"},
        {SYS_fsync, "fsync"},
        {SYS_fdatasync, "fdatasync"},
        {SYS_truncate, "truncate"},
        {SYS_ftruncate, "ftruncate"},
        {SYS_getdents64, "getdents64"},
        {SYS_getcwd, "getcwd"},
        {SYS_chdir, "chdir"},
        {SYS_fchdir, "fchdir"},
        {SYS_rename, "rename"},
        {SYS_mkdir, "mkdir"},
        {SYS_rmdir, "rmdir"},
        {SYS_link, "link"},
        {SYS_unlink, "unlink"},
        {SYS_symlink, "symlink"},
        {SYS_readlink, "readlink"},
        {SYS_chmod, "chmod"},
        {SYS_fchmod, "fchmod"},
        {SYS_chown, "chown"},
        {SYS_fchown, "fchown"},
        {SYS_umask, "umask"},
        {SYS_gettimeofday, "gettimeofday"},
        {SYS_getrlimit, "getrlimit"},
        {SYS_getrusage, "getrusage"},
        {SYS_sysinfo, "sysinfo"},
        {SYS_ptrace, "ptrace"},
        {SYS_getuid, "getuid"},
        {SYS_setuid, "setuid"},
        {SYS_setgid, "setgid"},
        {SYS_geteuid, "geteuid"},
        {SYS_getppid, "getppid"},
        {SYS_setsid, "setsid"},
        {SYS_setresuid, "setresuid"},
        {SYS_setresgid, "setresgid"},
        {SYS_capset, "capset"},
        {SYS_sigaltstack, "sigaltstack"},
        {SYS_personality, "personality"},
        {SYS_statfs, "statfs"},
        {SYS_fstatfs, "fstatfs"},
        {SYS_prctl, "prctl"},
        {SYS_arch_prctl, "arch_prctl"},
        {SYS_setrlimit, "setrlimit"},
        {SYS_chroot, "chroot"},
        {SYS_mount, "mount"},
        {SYS_umount2, "umount2"},
        {SYS_pivot_root, "pivot_root"},
        {SYS_gettid, "gettid"},
        {SYS_tkill, "tkill"},
        {SYS_futex, "futex"},
        {SYS_sched_getaffinity, "sched_getaffinity"},
        {SYS_getdents64, "getdents64"},
        {SYS_set_tid_address, "set_tid_address"},
        {SYS_clock_gettime, "clock_gettime"},
        {SYS_clock_nanosleep, "clock_nanosleep"},
        {SYS_exit_group, "exit_group"},
        {SYS_epoll_wait, "epoll_wait"},
        {SYS_epoll_ctl, "epoll_ctl"},
        {SYS_tgkill, "tgkill"},
        {SYS_openat, "openat"},
        {SYS_mkdirat, "mkdirat"},
        {SYS_newfstatat, "newfstatat"},
        {SYS_unlinkat, "unlinkat"},
        {SYS_renameat, "renameat"},
        {SYS_faccessat, "faccessat"},
        {SYS_set_robust_list, "set_robust_list"},
        {SYS_epoll_pwait, "epoll_pwait"},
        {SYS_eventfd2, "eventfd2"},
        {SYS_epoll_create1, "epoll_create1"},
        {SYS_pipe2, "pipe2"},
        {SYS_prlimit64, "prlimit64"},
        {SYS_process_vm_readv, "process_vm_readv"},
        {SYS_process_vm_writev, "process_vm_writev"},
        {SYS_renameat2, "renameat2"},
        {SYS_seccomp, "seccomp"},
        {SYS_getrandom, "getrandom"},
        {SYS_memfd_create, "memfd_create"},
        {SYS_bpf, "bpf"},
        {SYS_execveat, "execveat"},
        {SYS_userfaultfd, "userfaultfd"},
        {SYS_statx, "statx"},
        {SYS_rseq, "rseq"},
        {SYS_pidfd_send_signal, "pidfd_send_signal"},
        {SYS_pidfd_open, "pidfd_open"},
        {SYS_clone3, "clone3"},
        {SYS_faccessat2, "faccessat2"},
        {SYS_restart_syscall, "restart_syscall"},
        {SYS_unshare, "unshare"},
        {SYS_setns, "setns"},
        {SYS_kcmp, "kcmp"},
        {SYS_rt_sigreturn, "rt_sigreturn"},
        {SYS_sched_yield, "sched_yield"},
        {SYS_io_uring_setup, "io_uring_setup"},
        {SYS_perf_event_open, "perf_event_open"},
        {SYS_keyctl, "keyctl"},
        {SYS_add_key, "add_key"},
    };
    for (const auto& n : kNames)
        if (n.nr == nr) return n.name;
    return {};
}

}  // namespace forkvm::vmm
