#include "cli/guest_session.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <exception>

namespace forkvm::cli {
namespace {

void write_all(int fd, vmm::ByteView data) {
    std::size_t done = 0;
    while (done < data.size()) {
        ssize_t n = ::write(fd, data.data() + done, data.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;  // our reader went away: drop the rest
        done += static_cast<std::size_t>(n);
    }
}

}  // namespace

void report_vm_failure(std::string_view command, vmm::VmProcess& vm) {
    const int name_len = static_cast<int>(command.size());
    try {
        auto st = vm.status();
        std::fprintf(stderr, "%.*s: VM %s%s%s; unhandled I/O %llu; agent bytes dropped %llu\n", name_len,
                     command.data(), st.state.c_str(), st.reason.empty() ? "" : ": ", st.reason.c_str(),
                     static_cast<unsigned long long>(st.unhandled_io),
                     static_cast<unsigned long long>(st.agent_dropped_bytes));
        std::fprintf(stderr, "%.*s: agent channel: %s\n", name_len, command.data(), st.agent_device.c_str());
        std::fprintf(stderr, "--- guest console (tail):\n%s\n", vm.console_tail(8192).c_str());
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%.*s: the VM process does not answer either: %s\n", name_len, command.data(),
                     e.what());
    }
}

int exec_to_stdio(std::string_view command, vmm::AgentClient& agent, vmm::VmProcess& vm,
                  const ExecOptions& exec) {
    vmm::ExecRequest req;
    req.argv = exec.argv;
    req.user = exec.user;
    req.timeout_ms = exec.timeout_ms;
    req.stdout_cap = req.stderr_cap = 1ULL << 40;  // streamed, so no practical cap
    vmm::ExecCallbacks cb;
    cb.on_stdout = [](vmm::ByteView d) { write_all(STDOUT_FILENO, d); };
    cb.on_stderr = [](vmm::ByteView d) { write_all(STDERR_FILENO, d); };
    // The agent enforces timeout_ms; ours only catches an agent that never answers.
    const vmm::Deadline deadline =
        exec.timeout_ms > 0
            ? vmm::Deadline(std::chrono::milliseconds(exec.timeout_ms) + std::chrono::minutes(1))
            : vmm::Deadline(std::chrono::hours(24 * 365));
    vmm::ExecResult r{};
    try {
        r = agent.exec(req, cb, deadline);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(command.size()), command.data(), e.what());
        report_vm_failure(command, vm);
        return 125;
    }
    if (r.timed_out) {
        std::fprintf(stderr, "%.*s: command timed out after %u ms\n", static_cast<int>(command.size()),
                     command.data(), exec.timeout_ms);
        return 124;
    }
    if (r.term_signal != 0) return 128 + r.term_signal;
    return r.exit_code;
}

}  // namespace forkvm::cli
