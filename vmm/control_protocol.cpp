#include "vmm/control_protocol.hpp"

#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace forkvm::vmm::control {

nlohmann::json config_to_json(const VmConfig& config) {
    return {{"vcpu_count", config.vcpu_count},   {"memory_mb", config.memory_mb},
            {"kernel_path", config.kernel_path}, {"initrd_path", config.initrd_path},
            {"kernel_args", config.kernel_args}, {"agent_channel", to_string(config.agent_channel)}};
}

VmConfig config_from_json(const nlohmann::json& j) {
    if (!j.is_object()) throw std::invalid_argument("config: must be an object");
    VmConfig c;
    auto get_uint = [&](const char* key, auto& out) {
        if (!j.contains(key)) return;
        if (!j[key].is_number_unsigned())
            throw std::invalid_argument(std::string("config.") + key + ": must be a non-negative integer");
        out = j[key].get<std::remove_reference_t<decltype(out)>>();
    };
    auto get_string = [&](const char* key, std::string& out) {
        if (!j.contains(key)) return;
        if (!j[key].is_string())
            throw std::invalid_argument(std::string("config.") + key + ": must be a string");
        out = j[key].get<std::string>();
    };
    get_uint("vcpu_count", c.vcpu_count);
    get_uint("memory_mb", c.memory_mb);
    get_string("kernel_path", c.kernel_path);
    get_string("initrd_path", c.initrd_path);
    get_string("kernel_args", c.kernel_args);
    // Absent in snapshots made before the virtio console: those VMs talk on the UART.
    std::string channel = "uart";
    get_string("agent_channel", channel);
    auto parsed = agent_channel_from_string(channel);
    if (!parsed) throw std::invalid_argument("config.agent_channel: must be \"virtio\" or \"uart\"");
    c.agent_channel = *parsed;
    return c;
}

bool send_message(int fd, const nlohmann::json& message, std::span<const int> fds) {
    std::string text = message.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (text.size() > kMaxControlMessage || fds.size() > kMaxPassedFds) {
        errno = EMSGSIZE;
        return false;
    }
    iovec iov{text.data(), text.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * kMaxPassedFds)> control{};
    if (!fds.empty()) {
        msg.msg_control = control.data();
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    for (;;) {
        ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (n >= 0) return true;
        if (errno != EINTR) return false;
    }
}

std::optional<nlohmann::json> recv_message(int fd, std::vector<UniqueFd>* fds) {
    // Size the buffer to the message (MSG_PEEK|MSG_TRUNC gives a datagram's
    // full length): a VM process receives a few small messages over its
    // life, and a fixed kMaxControlMessage buffer would leave 256 KiB of
    // touched heap in every one of them, forks included.
    char probe = 0;
    ssize_t want = 0;
    do {
        want = ::recv(fd, &probe, 1, MSG_PEEK | MSG_TRUNC);
    } while (want < 0 && errno == EINTR);
    if (want <= 0) return std::nullopt;  // EOF (or an empty message: never sent) or an error
    std::vector<char> buf(std::min(static_cast<std::size_t>(want), kMaxControlMessage) + 1);
    iovec iov{buf.data(), buf.size()};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    alignas(cmsghdr) std::array<char, CMSG_SPACE(sizeof(int) * kMaxPassedFds)> control{};
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    ssize_t n = 0;
    do {
        n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    // Every fd that arrived is owned at once, so none leaks whatever follows.
    std::vector<UniqueFd> received;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (std::size_t k = 0; k < count; ++k) {
            int passed = -1;
            std::memcpy(&passed, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
            received.emplace_back(passed);
        }
    }
    if (n <= 0) return std::nullopt;
    const bool fds_cut = (msg.msg_flags & MSG_CTRUNC) != 0;
    const bool too_long =
        static_cast<std::size_t>(n) > kMaxControlMessage || (msg.msg_flags & MSG_TRUNC) != 0;
    if (too_long || fds_cut) return nlohmann::json{{"invalid", true}};
    auto j = nlohmann::json::parse(buf.begin(), buf.begin() + n, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return nlohmann::json{{"invalid", true}};
    if (fds != nullptr) *fds = std::move(received);
    return j;
}

}  // namespace forkvm::vmm::control
