// A real Linux microVM (Debian's kernel + our initramfs) in its own process,
// driven through the guest agent: commands, users, timeouts, files.

#include <algorithm>
#include <cstdlib>
#include <doctest/doctest.h>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "snapshot/sha256.hpp"
#include "vm_fixture.hpp"

using forkvm::test::kOpTimeout;
using forkvm::test::shared_vm;
using forkvm::vmm::AgentError;
using forkvm::vmm::AgentErrorCode;

namespace {

// Asserts that `fn` throws AgentError with `code`.
template <typename Fn>
void check_agent_error(Fn&& fn, AgentErrorCode code) {
    try {
        fn();
        FAIL("no error");
    } catch (const AgentError& e) {
        INFO(e.what());
        CHECK(e.code() == code);
    }
}

std::string trim(std::string s) {
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
}

}  // namespace

TEST_CASE("vm: uname -r in the guest is the Debian kernel the build used") {
    auto r = shared_vm().run({"uname", "-r"});
    CHECK(r.exit_code == 0);
    CHECK(trim(r.stdout_data) == FORKVM_TEST_KERNEL_RELEASE);
}

TEST_CASE("vm: exec separates stdout and stderr and returns the exit status") {
    auto r = shared_vm().run({"sh", "-c", "echo out; echo err >&2; exit 7"});
    CHECK(r.stdout_data == "out\n");
    CHECK(r.stderr_data == "err\n");
    CHECK(r.exit_code == 7);
    CHECK(r.term_signal == 0);
    CHECK_FALSE(r.timed_out);

    auto killed = shared_vm().run({"sh", "-c", "kill -9 $$"});
    CHECK(killed.term_signal == 9);
}

TEST_CASE("vm: commands run as an unprivileged user unless root is asked for") {
    auto user = shared_vm().run({"id", "-u"});
    CHECK(user.exit_code == 0);
    CHECK(trim(user.stdout_data) != "0");
    CHECK(trim(user.stdout_data) == "1000");
    auto root = shared_vm().run({"id", "-u"}, "root");
    CHECK(trim(root.stdout_data) == "0");
}

TEST_CASE("vm: a timed-out command loses its whole process group and the VM keeps working") {
    auto& vm = shared_vm();
    // A background child in the same group must die too.
    auto r = vm.run({"sh", "-c", "sleep 100 & sleep 100"}, "", 1000);
    CHECK(r.timed_out);
    CHECK(r.term_signal == 9);

    auto left = vm.sh("for p in /proc/[0-9]*; do cat $p/comm 2>/dev/null; done | grep -c '^sleep$'");
    CHECK(trim(left.stdout_data) == "0");

    CHECK_NOTHROW(vm.agent->ping(kOpTimeout));
    auto again = vm.run({"echo", "still here"});
    CHECK(again.stdout_data == "still here\n");
}

// FORKVM_TEST_TRANSFER_KIB sizes the file (default 4096: 4 MiB, seconds on the
// virtio console even in the emulated KVM host).
std::size_t transfer_bytes() {
    const char* v = std::getenv("FORKVM_TEST_TRANSFER_KIB");
    std::size_t kib = v != nullptr ? std::strtoul(v, nullptr, 10) : 4096;
    return std::max<std::size_t>(kib, 1) * 1024;
}

TEST_CASE("vm: a file holding every byte value round-trips byte-identical") {
    auto& vm = shared_vm();
    std::vector<std::uint8_t> data(transfer_bytes());
    MESSAGE("transfer size: " << data.size() << " bytes");
    std::iota(data.begin(), data.begin() + 256, 0);  // every value, in order, first
    std::mt19937 rng(42);
    std::generate(data.begin() + 256, data.end(), [&] { return static_cast<std::uint8_t>(rng()); });
    const std::string digest = forkvm::snapshot::to_hex(forkvm::snapshot::sha256(data));

    vm.agent->write_file({"/tmp/blob.bin", 0600, false, false}, data, kOpTimeout);
    // The guest sees the same bytes...
    auto sum = vm.sh("sha256sum /tmp/blob.bin");
    CHECK(sum.stdout_data.substr(0, 64) == digest);
    // ...and they come back unchanged.
    auto back = vm.agent->read_file({"/tmp/blob.bin", 0, 0}, kOpTimeout);
    CHECK(back.data.size() == data.size());
    CHECK(forkvm::snapshot::to_hex(forkvm::snapshot::sha256(back.data)) == digest);
    CHECK(back.data == data);
}

TEST_CASE("vm: file operations behave and their errors are typed") {
    auto& a = *shared_vm().agent;
    a.mkdir("/tmp/ops/a/b", true, 0750, kOpTimeout);
    auto st = a.stat("/tmp/ops/a/b", true, kOpTimeout);
    CHECK(st.type == forkvm::proto::FileType::directory);
    CHECK(st.mode == 0750);

    const std::string text = "hello\n";
    a.write_file({"/tmp/ops/a/f.txt", 0640, false, false},
                 std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()), kOpTimeout);
    auto fst = a.stat("/tmp/ops/a/f.txt", true, kOpTimeout);
    CHECK(fst.type == forkvm::proto::FileType::file);
    CHECK(fst.size == text.size());
    CHECK(fst.mode == 0640);

    auto list = a.list_dir("/tmp/ops/a", 100, kOpTimeout);
    std::vector<std::string> names;
    for (const auto& e : list.entries) names.push_back(e.name);
    std::sort(names.begin(), names.end());
    CHECK(names == std::vector<std::string>{"b", "f.txt"});
    CHECK_FALSE(list.truncated);

    CHECK(a.exists("/tmp/ops/a/f.txt", kOpTimeout));
    a.rename("/tmp/ops/a/f.txt", "/tmp/ops/g.txt", kOpTimeout);
    CHECK_FALSE(a.exists("/tmp/ops/a/f.txt", kOpTimeout));
    CHECK(a.exists("/tmp/ops/g.txt", kOpTimeout));

    check_agent_error([&] { (void)a.stat("/tmp/ops/missing", true, kOpTimeout); }, AgentErrorCode::not_found);
    check_agent_error([&] { a.mkdir("/tmp/ops/a", false, 0755, kOpTimeout); },
                      AgentErrorCode::already_exists);
    check_agent_error([&] { a.remove("/tmp/ops/a", false, kOpTimeout); }, AgentErrorCode::not_empty);
    check_agent_error([&] { (void)a.list_dir("/tmp/ops/g.txt", 10, kOpTimeout); },
                      AgentErrorCode::not_a_directory);
    check_agent_error(
        [&] {
            (void)a.read_file({"/tmp/ops/a", 0, 0}, kOpTimeout);
        },
        AgentErrorCode::is_a_directory);
    // The agent runs as root; sysfs refuses new directories even to root.
    check_agent_error([&] { a.mkdir("/sys/forkvm-test", false, 0755, kOpTimeout); },
                      AgentErrorCode::permission_denied);

    a.remove("/tmp/ops", true, kOpTimeout);
    CHECK_FALSE(a.exists("/tmp/ops", kOpTimeout));
}

TEST_CASE("vm: exec is binary-safe in argv, environment and output") {
    std::string arg;
    for (int c = 1; c < 256; ++c) arg.push_back(static_cast<char>(c));  // NUL ends a C string
    forkvm::vmm::ExecRequest req;
    req.argv = {"sh", "-c", "printf '%s' \"$1\"; printf '%s' \"$V\" >&2", "sh", arg};
    req.env = {"V=" + arg};
    auto r = shared_vm().agent->exec_buffered(req, kOpTimeout);
    CHECK(r.exit_code == 0);
    CHECK(r.stdout_data == arg);
    CHECK(r.stderr_data == arg);
}
