// HostsMap: the host's static name table for egress. The proxy never asks
// DNS: a name resolves only through this map, which the operator
// configures, so a sandbox cannot learn or steer what a name means, and
// the address that is checked is the one connected to (docs/egress.md).
#pragma once

#include <map>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "http_proxy/ip_address.hpp"

namespace forkvm::http_proxy {

class HostsMapError : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};

class HostsMap {
public:
    // Entries "name=address" (a valid domain, lower case; a strict IPv4 or
    // IPv6 address). A name given more than once gets each address, in
    // order. Throws HostsMapError naming the entry.
    static HostsMap parse(const std::vector<std::string>& entries);

    // The addresses of `name` (lower case, no trailing dot), in configured
    // order; empty when the map does not know it.
    [[nodiscard]] const std::vector<IpAddress>& resolve(std::string_view name) const;
    [[nodiscard]] std::size_t size() const noexcept { return names_.size(); }

private:
    std::map<std::string, std::vector<IpAddress>, std::less<>> names_;
};

}  // namespace forkvm::http_proxy
