#pragma once
// server.user: `forkvm serve` starts as root and drops to an unprivileged
// user before it builds anything (docs/security.md §5). What it still needs
// from root is taken first or kept as capabilities:
//   - /dev/kvm is opened as root and the fd handed to each VM process, so
//     neither the server nor its VM processes need access to the node;
//   - the data directory and the forkvm cgroup subtree (v2 delegation) are
//     given to the user;
//   - kept capabilities: what jails a VM process (CAP_SYS_ADMIN,
//     CAP_SETUID, CAP_SETGID, CAP_SETPCAP; also ambient, so the VM process
//     it starts holds them until its jail clears them), CAP_CHOWN (a VM's
//     snapshot directory is lent to its uid and taken back) and CAP_KILL
//     (VM processes run as other uids); CAP_NET_BIND_SERVICE only to listen
//     on a port below 1024. Everything else is gone, bounding set included.

#include <sys/types.h>

#include <string>

#include "config/config.hpp"
#include "vmm/capabilities.hpp"
#include "vmm/cgroup.hpp"
#include "vmm/unique_fd.hpp"

namespace forkvm::cli {

struct ServerUser {
    std::string name;
    uid_t uid = 0;
    gid_t gid = 0;
};

// Thrown with a message naming server.user and what is wrong.
class ServerUserError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// "nobody" or "65534": a user in the password database, or a bare uid
// (its gid then equal to it). Throws ServerUserError.
[[nodiscard]] ServerUser resolve_server_user(const std::string& spec);

// The capabilities the server keeps as `user`: effective and permitted.
[[nodiscard]] vmm::CapabilityMask server_capabilities(bool privileged_port);

// Changes this process (root, single-threaded) into `user` as described
// above and returns the open /dev/kvm for the VM processes. Throws
// ServerUserError (or SysError from a step that failed).
[[nodiscard]] UniqueFd become_server_user(const ServerUser& user, const config::Config& c,
                                          const vmm::CgroupHost& cgroups);

}  // namespace forkvm::cli
