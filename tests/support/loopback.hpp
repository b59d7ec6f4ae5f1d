#pragma once
// Loopback helpers for tests that talk TCP on 127.0.0.1. Doctest-free:
// setup failures throw std::runtime_error (a failed test either way).

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <chrono>
#include <cstdint>
#include <functional>
#include <netinet/in.h>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>

#include "vmm/unique_fd.hpp"

namespace forkvm::test {

// A port nothing listens on right now (bound once, then released).
inline std::uint16_t unused_loopback_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    const bool ok = fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0;
    if (fd >= 0) ::close(fd);
    if (!ok) throw std::runtime_error("no free loopback port");
    return ntohs(a.sin_port);
}

inline std::string read_until_eof(int fd) {
    std::string out;
    char buf[65536];
    ssize_t n = 0;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    return out;
}

// To a socket; a peer that went away ends it (no SIGPIPE).
inline void write_all(int fd, std::string_view bytes) {
    while (!bytes.empty()) {
        const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        if (n <= 0) return;
        bytes.remove_prefix(static_cast<std::size_t>(n));
    }
}

// A loopback server for one connection: `serve(fd)` on its own thread,
// then the connection is closed.
class OneConnectionServer {
public:
    explicit OneConnectionServer(std::function<void(int)> serve) {
        listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
            ::listen(listen_fd_, 4) != 0 ||
            ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
            if (listen_fd_ >= 0) ::close(listen_fd_);
            throw std::runtime_error("cannot listen on loopback");
        }
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this, serve = std::move(serve)] {
            const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) return;
            serve(fd);
            ::close(fd);
        });
    }
    // One that reads until EOF and answers answer(what it read).
    static std::function<void(int)> answering(std::function<std::string(const std::string&)> answer) {
        return [answer = std::move(answer)](int fd) { write_all(fd, answer(read_until_eof(fd))); };
    }
    ~OneConnectionServer() {
        ::shutdown(listen_fd_, SHUT_RDWR);
        thread_.join();
        ::close(listen_fd_);
    }
    OneConnectionServer(const OneConnectionServer&) = delete;
    OneConnectionServer& operator=(const OneConnectionServer&) = delete;
    [[nodiscard]] std::uint16_t port() const { return port_; }

private:
    int listen_fd_ = -1;
    std::uint16_t port_ = 0;
    std::thread thread_;
};

// A client connection to 127.0.0.1:port, retried for up to two seconds
// (the listener may still be starting).
class LoopbackClient {
public:
    explicit LoopbackClient(std::uint16_t port) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_port = htons(port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        for (int i = 0; i < 200 && !fd_; ++i) {
            fd_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
            if (::connect(fd_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
                fd_.reset();
                std::this_thread::sleep_for(std::chrono::milliseconds(10));
            }
        }
        if (!fd_) throw std::runtime_error("cannot connect to 127.0.0.1:" + std::to_string(port));
    }
    void send(std::string_view bytes) { write_all(fd_.get(), bytes); }
    void shutdown_write() { ::shutdown(fd_.get(), SHUT_WR); }
    // What came until `needle` was seen (inclusive of what came with it),
    // EOF, or five quiet seconds ("<timeout>" appended).
    std::string read_until(std::string_view needle) {
        char buf[4096];
        while (needle.empty() || got_.find(needle) == std::string::npos) {
            pollfd p{fd_.get(), POLLIN, 0};
            if (::poll(&p, 1, 5000) <= 0) return std::exchange(got_, {}) + "<timeout>";
            const ssize_t n = ::read(fd_.get(), buf, sizeof buf);
            if (n <= 0) break;
            got_.append(buf, static_cast<std::size_t>(n));
        }
        return std::exchange(got_, {});
    }
    std::string read_to_eof() { return read_until(""); }

private:
    UniqueFd fd_;
    std::string got_;
};

// A client of a proxy port: sends `request` (then shuts its sending side if
// `half_close`), reads until EOF.
inline std::string proxy_client(std::uint16_t port, const std::string& request, bool half_close = false) {
    LoopbackClient client(port);
    client.send(request);
    if (half_close) client.shutdown_write();
    return client.read_to_eof();
}

}  // namespace forkvm::test
