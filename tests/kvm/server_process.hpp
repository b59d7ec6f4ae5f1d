#pragma once
// A `forkvm serve` process for the kvm tests, its output in a log file.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

namespace forkvm::test {

std::string read_file(const std::filesystem::path& p);

class ServerProcess {
public:
    // Starts `binary serve --config config`, stdout and stderr appended to `log`.
    ServerProcess(const std::filesystem::path& config, const std::filesystem::path& log,
                  const std::filesystem::path& binary = FORKVM_TEST_BINARY);
    ServerProcess(const ServerProcess&) = delete;
    ServerProcess& operator=(const ServerProcess&) = delete;
    // SIGKILL and reap, unless it was reaped already.
    ~ServerProcess();

    pid_t pid() const { return pid_; }
    // What this process wrote (the file may hold an earlier run's log too).
    std::string log() const;

    // Waits for the "listening on http://HOST:PORT" line; returns the port
    // (a failed test, with the log, if it does not come).
    std::uint16_t wait_listening(std::chrono::seconds limit);

    bool exited();
    void signal(int sig) const;
    int status() const { return status_; }

private:
    std::filesystem::path log_;
    std::size_t log_start_ = 0;
    pid_t pid_ = -1;
    bool reaped_ = false;
    int status_ = 0;
};

}  // namespace forkvm::test
