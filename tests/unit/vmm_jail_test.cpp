// The jail (vmm/jail.hpp) entered for real in a forked child, no KVM
// needed: what the child can still see and do afterwards. The kvm jail test
// checks the same on real VM processes, plus seccomp and cgroups.

#include <dirent.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <doctest/doctest.h>
#include <netinet/in.h>
#include <string>

#include "vmm/jail.hpp"
#include "vmm/run_in_child.hpp"

namespace {

// Runs `probe` in a child after enter_jail(uid 4000123); returns what the
// child wrote, or "jail failed: ..." / "child died".
template <typename Probe>
std::string in_jail(Probe probe) {
    const auto outcome = forkvm::vmm::run_in_child([&](int out) {
        std::string text;
        try {
            forkvm::vmm::enter_jail({.uid = 4000123, .max_file_bytes = 1 << 20});
            text = probe();
        } catch (const std::exception& e) {
            text = std::string("jail failed: ") + e.what();
        }
        (void)!::write(out, text.data(), text.size());
        return 0;
    });
    return outcome.exited(0) ? outcome.output : "child died";
}

std::string err(int rc) { return rc < 0 ? std::to_string(errno) : "ok"; }

}  // namespace

TEST_CASE("jail: a jailed process is unprivileged, in an empty root, without network or core dumps") {
    if (auto reason = forkvm::vmm::jail_unavailable_reason()) {
        MESSAGE("this host cannot build jails, nothing to check here: " << *reason);
        return;
    }
    CHECK(in_jail([] { return std::to_string(::getuid()) + "/" + std::to_string(::getgid()); }) ==
          "4000123/4000123");
    CHECK(in_jail([] {
              __user_cap_header_struct h{_LINUX_CAPABILITY_VERSION_3, 0};
              __user_cap_data_struct d[2]{};
              if (::syscall(SYS_capget, &h, d) != 0) return std::string("capget failed");
              return std::to_string(d[0].effective | d[1].effective | d[0].permitted | d[1].permitted);
          }) == "0");
    CHECK(in_jail([] {
              return std::to_string(::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0)) + "," +
                     std::to_string(::prctl(PR_GET_DUMPABLE, 0, 0, 0, 0));
          }) == "1,0");
    // The root is empty and read-only; nothing of the host can be opened.
    CHECK(in_jail([] {
              std::string names;
              DIR* d = ::opendir("/");
              if (d == nullptr) return std::string("opendir failed");
              while (dirent* e = ::readdir(d)) names += std::string(e->d_name) + " ";
              ::closedir(d);
              return names;
          }) == ". .. ");
    CHECK(in_jail([] { return err(::open("/etc/passwd", O_RDONLY)); }) == std::to_string(ENOENT));
    CHECK(in_jail([] { return err(::mkdir("/x", 0700)); }) == std::to_string(EROFS));
    // Its own network namespace: loopback only, and down.
    CHECK(in_jail([] {
              int fd = ::socket(AF_INET, SOCK_STREAM, 0);
              sockaddr_in a{};
              a.sin_family = AF_INET;
              a.sin_port = htons(22);
              a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
              int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
              return err(rc);
          }) == std::to_string(ENETUNREACH));
    CHECK(in_jail([] {
              char name[64]{};
              ::gethostname(name, sizeof name - 1);
              rlimit core{}, fsize{};
              ::getrlimit(RLIMIT_CORE, &core);
              ::getrlimit(RLIMIT_FSIZE, &fsize);
              return std::string(name) + " " + std::to_string(core.rlim_max) + " " +
                     std::to_string(fsize.rlim_max);
          }) == "forkvm-vmm 0 1048576");
}

TEST_CASE("jail: uid 0 is refused") {
    const std::string out = [] {
        try {
            forkvm::vmm::enter_jail({.uid = 0, .max_file_bytes = 0});
            return std::string("entered");
        } catch (const std::exception& e) {
            return std::string(e.what());
        }
    }();
    CHECK(out.find("uid 0 is not allowed") != std::string::npos);
}
