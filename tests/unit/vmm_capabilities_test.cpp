// Capability sets (vmm/capabilities.hpp) changed for real in forked
// children: what `forkvm serve` keeps as server.user, that a program it
// starts gets exactly the ambient set, and that the jail of such a program
// clears every set (leaving a non-root uid does not do that by itself).

#include <linux/capability.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <doctest/doctest.h>
#include <fstream>
#include <sstream>
#include <string>

#include "vmm/capabilities.hpp"
#include "vmm/jail.hpp"
#include "vmm/run_in_child.hpp"

using forkvm::vmm::capability_bit;
using forkvm::vmm::CapabilityMask;
using forkvm::vmm::CapabilitySets;

namespace {

constexpr uid_t kUser = 4000456;
constexpr CapabilityMask kKeep =
    forkvm::vmm::kJailCapabilities | capability_bit(CAP_CHOWN) | capability_bit(CAP_KILL);

// "Uid: ...", "CapEff: ..." and the other lines of /proc/self/status that
// describe credentials, as one string.
std::string credentials_of_self() {
    std::ifstream in("/proc/self/status");
    std::string line, out;
    while (std::getline(in, line)) {
        for (const char* key :
             {"Uid:", "Gid:", "Groups:", "CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"})
            if (line.starts_with(key)) out += line + "\n";
    }
    return out;
}

std::string hex16(CapabilityMask mask) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(mask));
    return buf;
}

bool root() { return ::geteuid() == 0; }

}  // namespace

TEST_CASE("capabilities: names for the log") {
    CHECK(forkvm::vmm::capability_names(0) == "none");
    CHECK(forkvm::vmm::capability_names(capability_bit(CAP_KILL) | capability_bit(CAP_SYS_ADMIN)) ==
          "CAP_KILL, CAP_SYS_ADMIN");
    CHECK(forkvm::vmm::capability_names(capability_bit(CAP_SYS_TIME)) == "cap_25");
}

TEST_CASE("capabilities: a server user keeps exactly what it asked for, ambient included") {
    if (!root()) {
        MESSAGE("not root: nothing to drop");
        return;
    }
    const auto outcome = forkvm::vmm::run_in_child([](int out) {
        forkvm::vmm::become_user_keeping(kUser, kUser + 1, kKeep, forkvm::vmm::kJailCapabilities);
        const std::string text = credentials_of_self();
        (void)!::write(out, text.data(), text.size());
        return 0;
    });
    REQUIRE(outcome.exited(0));
    const std::string& creds = outcome.output;
    INFO(creds);
    CHECK(creds.find("Uid:\t4000456\t4000456\t4000456\t4000456") != std::string::npos);
    CHECK(creds.find("Gid:\t4000457\t4000457\t4000457\t4000457") != std::string::npos);
    // No supplementary group: nothing but blanks after "Groups:".
    const auto groups = creds.find("Groups:");
    REQUIRE(groups != std::string::npos);
    CHECK(creds.substr(groups + 7, creds.find('\n', groups) - groups - 7).find_first_not_of(" \t") ==
          std::string::npos);
    CHECK(creds.find("CapEff:\t" + hex16(kKeep)) != std::string::npos);
    CHECK(creds.find("CapPrm:\t" + hex16(kKeep)) != std::string::npos);
    CHECK(creds.find("CapBnd:\t" + hex16(kKeep)) != std::string::npos);
    CHECK(creds.find("CapInh:\t" + hex16(forkvm::vmm::kJailCapabilities)) != std::string::npos);
    CHECK(creds.find("CapAmb:\t" + hex16(forkvm::vmm::kJailCapabilities)) != std::string::npos);
}

TEST_CASE("capabilities: a program the server user starts holds the ambient set only") {
    if (!root()) {
        MESSAGE("not root: nothing to drop");
        return;
    }
    const auto outcome = forkvm::vmm::run_in_child([](int out) {
        forkvm::vmm::become_user_keeping(kUser, kUser, kKeep, forkvm::vmm::kJailCapabilities);
        ::dup2(out, STDOUT_FILENO);
        char grep[] = "/bin/grep", pattern[] = "^Cap", file[] = "/proc/self/status";
        char* argv[] = {grep, pattern, file, nullptr};
        char* envp[] = {nullptr};
        ::execve(grep, argv, envp);
        return 126;
    });
    REQUIRE(outcome.exited(0));
    INFO(outcome.output);
    const std::string jail = hex16(forkvm::vmm::kJailCapabilities);
    CHECK(outcome.output.find("CapEff:\t" + jail) != std::string::npos);
    CHECK(outcome.output.find("CapPrm:\t" + jail) != std::string::npos);
    CHECK(outcome.output.find("CapAmb:\t" + jail) != std::string::npos);
}

TEST_CASE("capabilities: the jail of a server user's VM process clears every capability") {
    if (!root() || forkvm::vmm::jail_unavailable_reason()) {
        MESSAGE("this host cannot build jails, nothing to check here");
        return;
    }
    const auto outcome = forkvm::vmm::run_in_child([](int out) {
        forkvm::vmm::become_user_keeping(kUser, kUser, kKeep, forkvm::vmm::kJailCapabilities);
        // What jail_unavailable_reason() decides for a server user: it can.
        if (auto reason = forkvm::vmm::jail_unavailable_reason()) {
            (void)!::write(out, reason->data(), reason->size());
            return 1;
        }
        forkvm::vmm::enter_jail({.uid = kUser + 7, .max_file_bytes = 0});
        const CapabilitySets now = forkvm::vmm::current_capabilities();
        const std::string text = hex16(now.effective | now.permitted | now.inheritable) + " " +
                                 hex16(forkvm::vmm::ambient_capabilities()) + " " +
                                 std::to_string(::prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0)) + " " +
                                 std::to_string(::getuid());
        (void)!::write(out, text.data(), text.size());
        return 0;
    });
    INFO(outcome.output);
    REQUIRE(outcome.exited(0));
    CHECK(outcome.output == hex16(0) + " " + hex16(0) + " 0 " + std::to_string(kUser + 7));
}

TEST_CASE("capabilities: a user without them is told it cannot jail, and ambient must be kept") {
    if (!root()) {
        MESSAGE("not root: nothing to drop");
        return;
    }
    const auto outcome = forkvm::vmm::run_in_child([](int out) {
        forkvm::vmm::become_user_keeping(kUser, kUser, capability_bit(CAP_KILL), 0);
        const std::string text = forkvm::vmm::jail_unavailable_reason().value_or("can jail");
        (void)!::write(out, text.data(), text.size());
        return 0;
    });
    REQUIRE(outcome.exited(0));
    CHECK(
        outcome.output.find("neither as root nor with CAP_SETGID, CAP_SETUID, CAP_SETPCAP, CAP_SYS_ADMIN") !=
        std::string::npos);
    const auto refused = forkvm::vmm::run_in_child([](int) {
        forkvm::vmm::become_user_keeping(kUser, kUser, capability_bit(CAP_KILL), capability_bit(CAP_CHOWN));
        return 0;
    });
    CHECK(refused.exited(125));
    CHECK(refused.output.find("ambient must be a subset of keep") != std::string::npos);
}

TEST_CASE("run_in_child: output, exit code and signal of the child") {
    const auto written = forkvm::vmm::run_in_child([](int out) {
        (void)!::write(out, "hello", 5);
        return 7;
    });
    CHECK(written.output == "hello");
    CHECK(written.exited(7));
    const auto killed = forkvm::vmm::run_in_child([](int) {
        ::raise(SIGKILL);
        return 0;
    });
    CHECK(killed.signal == SIGKILL);
    CHECK_FALSE(killed.exited(0));
}
