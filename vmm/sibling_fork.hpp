#pragma once
// fork() for VM processes whose child must belong to the controller.
//
// A VM process forks a copy of itself to clone its VM (zero-copy: the
// child shares guest memory copy-on-write). The child is made with
// clone(CLONE_PARENT), so its parent is the controller, not the VM process
// it was forked from: the controller reaps it like any VM it spawned, its
// PR_SET_PDEATHSIG follows the controller, and deleting the source VM does
// not take its forks down with it.
//
// Call it only while the process is single-threaded (vCPU threads parked):
// the child gets just the calling thread, and no lock may be held. The raw
// syscall skips glibc's fork handlers; what glibc keeps per thread is still
// right for what the child does (getpid/gettid are system calls, signals to
// itself use the kernel's tid, new threads get their own descriptors).

#include <sys/types.h>

namespace forkvm::vmm {

// Returns the child's pid in the caller, 0 in the child, -1 (errno set) on
// failure. The child's exit is signalled (SIGCHLD) to the controller.
pid_t fork_as_sibling() noexcept;

}  // namespace forkvm::vmm
