#include "vmm/control_protocol.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <stdexcept>
#include <vector>

namespace forkvm::vmm::control {

nlohmann::json config_to_json(const VmConfig& config) {
    return {{"vcpu_count", config.vcpu_count},
            {"memory_mb", config.memory_mb},
            {"kernel_path", config.kernel_path},
            {"initrd_path", config.initrd_path},
            {"kernel_args", config.kernel_args}};
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
    return c;
}

bool send_message(int fd, const nlohmann::json& message) {
    std::string text = message.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (text.size() > kMaxControlMessage) {
        errno = EMSGSIZE;
        return false;
    }
    for (;;) {
        ssize_t n = ::send(fd, text.data(), text.size(), MSG_NOSIGNAL);
        if (n >= 0) return true;
        if (errno != EINTR) return false;
    }
}

std::optional<nlohmann::json> recv_message(int fd) {
    std::vector<char> buf(kMaxControlMessage + 1);
    ssize_t n = 0;
    do {
        n = ::recv(fd, buf.data(), buf.size(), 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return std::nullopt;
    if (static_cast<std::size_t>(n) > kMaxControlMessage) return nlohmann::json{{"invalid", true}};
    auto j = nlohmann::json::parse(buf.begin(), buf.begin() + n, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return nlohmann::json{{"invalid", true}};
    return j;
}

}  // namespace forkvm::vmm::control
