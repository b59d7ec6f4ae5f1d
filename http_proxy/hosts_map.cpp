#include "http_proxy/hosts_map.hpp"

#include <algorithm>

#include "http_proxy/host.hpp"

namespace forkvm::http_proxy {

HostsMap HostsMap::parse(const std::vector<std::string>& entries) {
    HostsMap map;
    for (const std::string& entry : entries) {
        const auto eq = entry.find('=');
        if (eq == std::string::npos)
            throw HostsMapError("hosts entry '" + entry + "': expected name=address");
        const std::string name = entry.substr(0, eq);
        const std::string address_text = entry.substr(eq + 1);
        if (!is_valid_domain(name)) {
            throw HostsMapError("hosts entry '" + entry +
                                "': the name must be a lower-case domain (letters, digits, '-', dots)");
        }
        const auto address = IpAddress::parse_strict(address_text);
        if (!address) {
            throw HostsMapError("hosts entry '" + entry +
                                "': the address must be a dotted-quad IPv4 or an IPv6 address");
        }
        auto& list = map.names_[name];
        if (std::find(list.begin(), list.end(), *address) == list.end()) list.push_back(*address);
    }
    return map;
}

const std::vector<IpAddress>& HostsMap::resolve(std::string_view name) const {
    static const std::vector<IpAddress> kNone;
    const auto it = names_.find(name);
    return it == names_.end() ? kNone : it->second;
}

}  // namespace forkvm::http_proxy
