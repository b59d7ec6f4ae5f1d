// forkvm vmm: the body of a VM process. Started by VmProcess::spawn (never
// by hand): it receives its sockets as inherited fds.

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "cli/commands.hpp"
#include "vmm/vm_process_main.hpp"

namespace forkvm::cli {
namespace {

bool parse_int(const char* text, long& out) {
    char* end = nullptr;
    out = std::strtol(text, &end, 10);
    return end != text && *end == '\0' && out >= 0;
}

}  // namespace

int vmm_process(std::span<char*> args) {
    vmm::VmProcessArgs a;
    for (std::size_t i = 0; i < args.size(); ++i) {
        std::string_view flag = args[i];
        if (flag == "--seccomp" && i + 1 < args.size()) {
            auto mode = vmm::parse_seccomp_mode(args[++i]);
            if (!mode) {
                std::fprintf(stderr, "forkvm vmm: --seccomp takes off, log or enforce\n");
                return 2;
            }
            a.seccomp = *mode;
            continue;
        }
        long value = 0;
        if (i + 1 >= args.size() || !parse_int(args[i + 1], value)) {
            std::fprintf(stderr,
                         "usage: forkvm vmm --control-fd N --agent-fd N [--console-fd N] [--kvm-fd N]\n"
                         "                  [--parent-pid PID] [--jail-uid UID] [--seccomp off|log|enforce]\n"
                         "(internal: started by forkvm itself for each VM)\n");
            return 2;
        }
        ++i;
        if (flag == "--control-fd") {
            a.control_fd = static_cast<int>(value);
        } else if (flag == "--agent-fd") {
            a.agent_fd = static_cast<int>(value);
        } else if (flag == "--console-fd") {
            a.console_fd = static_cast<int>(value);
        } else if (flag == "--kvm-fd") {
            a.kvm_fd = static_cast<int>(value);
        } else if (flag == "--parent-pid") {
            a.parent_pid = static_cast<pid_t>(value);
        } else if (flag == "--jail-uid") {
            a.jail_uid = static_cast<uid_t>(value);
        } else {
            std::fprintf(stderr, "forkvm vmm: unknown option %.*s\n", static_cast<int>(flag.size()),
                         flag.data());
            return 2;
        }
    }
    if (a.control_fd < 0 || a.agent_fd < 0) {
        std::fprintf(stderr, "forkvm vmm: --control-fd and --agent-fd are required\n");
        return 2;
    }
    return vmm::run_vm_process(a);
}

}  // namespace forkvm::cli
