// forkvm-agent: started by the initramfs's /init inside every VM; serves the
// agent protocol on a serial port (or any byte-stream device) until EOF.
//   forkvm-agent [--channel PATH]     (default /dev/ttyS1)

#include <fcntl.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "guest/agent/hygiene.hpp"
#include "guest/agent/options.hpp"
#include "guest/agent/server.hpp"

namespace {

int open_channel(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd < 0) {
        std::fprintf(stderr, "forkvm-agent: open %s: %s\n", path.c_str(), std::strerror(errno));
        return -1;
    }
    if (::isatty(fd) != 0) {
        // Raw bytes both ways: no echo, no line discipline, no CR/LF mapping.
        termios t{};
        if (::tcgetattr(fd, &t) == 0) {
            ::cfmakeraw(&t);
            t.c_cc[VMIN] = 1;
            t.c_cc[VTIME] = 0;
            (void)::tcsetattr(fd, TCSANOW, &t);
        }
    }
    return fd;
}

}  // namespace

int main(int argc, char** argv) {
    std::string channel = "/dev/ttyS1";
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg == "--channel" && i + 1 < argc) {
            channel = argv[++i];
        } else if (arg.rfind("--channel=", 0) == 0) {
            channel = arg.substr(10);
        } else {
            std::fprintf(stderr, "usage: forkvm-agent [--channel PATH]\n");
            return 2;
        }
    }
    const forkvm::agent::Options options;
    // One watcher for the life of the agent: see serve()'s comment.
    forkvm::agent::MailboxWatcher mailbox(options);
    const bool init = ::getpid() == 1;
    while (true) {
        const int fd = open_channel(channel);
        int rc = 1;
        if (fd >= 0) {
            rc = forkvm::agent::serve(fd, options, mailbox);
            ::close(fd);
        }
        // As PID 1 the agent must never exit (the kernel would panic): reopen
        // the channel and serve again.
        if (!init) return rc;
        ::sleep(1);
    }
}
