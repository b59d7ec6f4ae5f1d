#include "vmm/run_in_child.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>

#include "vmm/sys_error.hpp"
#include "vmm/unique_fd.hpp"

namespace forkvm::vmm {

ChildOutcome run_in_child(const std::function<int(int output_fd)>& body) {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw SysError("pipe2", errno);
    UniqueFd read_end(p[0]);
    UniqueFd write_end(p[1]);
    const pid_t pid = ::fork();
    if (pid < 0) throw SysError("fork", errno);
    if (pid == 0) {
        read_end.reset();
        int code = 125;
        try {
            code = body(write_end.get());
        } catch (const std::exception& e) {
            (void)!::write(write_end.get(), e.what(), std::strlen(e.what()));
        }
        ::_exit(code);
    }
    write_end.reset();
    ChildOutcome outcome;
    char buf[512];
    for (;;) {
        const ssize_t n = ::read(read_end.get(), buf, sizeof buf);
        if (n > 0) {
            outcome.output.append(buf, static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
            break;
        }
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) throw SysError("waitpid", errno);
    }
    if (WIFEXITED(status)) outcome.exit_code = WEXITSTATUS(status);
    if (WIFSIGNALED(status)) outcome.signal = WTERMSIG(status);
    return outcome;
}

}  // namespace forkvm::vmm
