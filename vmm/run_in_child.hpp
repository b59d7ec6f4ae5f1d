#pragma once
// Runs a function in a forked child and collects what it wrote: the trial
// jail at server start and the jail, seccomp and capability unit tests all
// need "do this irreversible thing to a process, then look at the result"
// without doing it to the caller.

#include <functional>
#include <string>

namespace forkvm::vmm {

struct ChildOutcome {
    std::string output;  // everything the child wrote to its output fd
    int exit_code = -1;  // when it exited
    int signal = 0;      // when a signal ended it
    [[nodiscard]] bool exited(int code) const noexcept { return signal == 0 && exit_code == code; }
};

// Forks; the child runs body(output_fd) and exits with its return value (or
// 125 if it throws, with the exception's text written to the output). The
// parent reads the output until the child and everything it started close
// it, then reaps the child. Throws SysError if the pipe or the fork fails.
// Fork copies only the calling thread: call it while single-threaded, or
// keep the body to system calls.
ChildOutcome run_in_child(const std::function<int(int output_fd)>& body);

}  // namespace forkvm::vmm
