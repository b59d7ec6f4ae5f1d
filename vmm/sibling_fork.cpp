#include "vmm/sibling_fork.hpp"

#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace forkvm::vmm {

pid_t fork_as_sibling() noexcept {
    // x86-64 argument order: flags, new stack (0 = share a copy, as fork
    // does), parent tid, child tid, tls.
    const unsigned long flags = CLONE_PARENT | SIGCHLD;
    long pid = ::syscall(SYS_clone, flags, 0L, nullptr, nullptr, 0L);
    return static_cast<pid_t>(pid);
}

}  // namespace forkvm::vmm
