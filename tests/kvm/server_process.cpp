#include "tests/kvm/server_process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <doctest/doctest.h>
#include <fstream>
#include <regex>
#include <sstream>
#include <vector>

#include "tests/kvm/vm_fixture.hpp"

extern char** environ;

namespace forkvm::test {

namespace fs = std::filesystem;

std::string read_file(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

ServerProcess::ServerProcess(const fs::path& config, const fs::path& log, const fs::path& binary)
    : log_(log), log_start_(read_file(log).size()) {
    std::vector<std::string> args = {binary.string(), "serve", "--config", config.string()};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
    posix_spawn_file_actions_addopen(&fa, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
    const int rc = ::posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    REQUIRE(rc == 0);
}

ServerProcess::~ServerProcess() {
    if (pid_ > 0 && !reaped_) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
    }
}

std::string ServerProcess::log() const { return read_file(log_).substr(log_start_); }

std::uint16_t ServerProcess::wait_listening(std::chrono::seconds limit) {
    static const std::regex re(R"(listening on https?://[0-9.]+:([0-9]+))");
    std::smatch m;
    const bool ok = poll_until(
        [&] {
            const std::string text = log();
            return std::regex_search(text, m, re) || exited();
        },
        limit);
    INFO("server log:\n" << log());
    REQUIRE(ok);
    REQUIRE_FALSE(exited());
    const std::string text = log();
    REQUIRE(std::regex_search(text, m, re));
    return static_cast<std::uint16_t>(std::stoi(m[1].str()));
}

bool ServerProcess::exited() {
    if (reaped_) return true;
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
        status_ = status;
    }
    return reaped_;
}

void ServerProcess::signal(int sig) const { ::kill(pid_, sig); }

}  // namespace forkvm::test
