#pragma once
// The control channel between a VM process and its controller: one JSON
// object per SOCK_SEQPACKET message (at most kMaxControlMessage bytes).
//
// controller → VM process: {"id": N, "op": "boot", "config": {...}}
//                          {"id": N, "op": "pause" | "resume" | "status" | "stop"}
//                          {"id": N, "op": "console", "max_bytes": M}
//                          {"id": N, "op": "restore", "dir": D, "hostname": H, "paused": B}
//                          {"id": N, "op": "snapshot", "dir": D}
//                          {"id": N, "op": "fork", "hostname": H, "paused": B}
//                            + 2 fds: the child's control and agent sockets
// A fork's child speaks on its own control socket; its first message is
//                          {"event": "forked", "ok": true} or {..., "ok": false, "error": "..."}
// VM process → controller: {"id": N, "ok": true, ...}  or
//                          {"id": N, "ok": false, "error": "..."}
//                          {"event": "stopped", "reason": "...", "clean": bool}
// The controller closing its end means "stop now": the VM process exits.

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "vmm/unique_fd.hpp"
#include "vmm/vm_config.hpp"

namespace forkvm::vmm::control {

constexpr std::size_t kMaxControlMessage = 256 * 1024;

nlohmann::json config_to_json(const VmConfig& config);
// Throws std::invalid_argument naming the field on a wrong shape.
VmConfig config_from_json(const nlohmann::json& j);

constexpr std::size_t kMaxPassedFds = 4;

// Sends one message, with up to kMaxPassedFds file descriptors (SCM_RIGHTS);
// false (with errno) if the socket failed.
bool send_message(int fd, const nlohmann::json& message, std::span<const int> fds = {});
// Receives one message: nullopt on EOF or error; throws nothing. A message
// that is not a JSON object, or too large, or whose fds did not all fit,
// yields an object {"invalid": true}. Passed fds land in `*fds` (closed when
// fds is null or the message is invalid).
std::optional<nlohmann::json> recv_message(int fd, std::vector<UniqueFd>* fds = nullptr);

}  // namespace forkvm::vmm::control
