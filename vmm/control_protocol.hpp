#pragma once
// The control channel between a VM process and its controller: one JSON
// object per SOCK_SEQPACKET message (at most kMaxControlMessage bytes).
//
// controller → VM process: {"id": N, "op": "boot", "config": {...}}
//                          {"id": N, "op": "pause" | "resume" | "status" | "stop"}
//                          {"id": N, "op": "console", "max_bytes": M}
// VM process → controller: {"id": N, "ok": true, ...}  or
//                          {"id": N, "ok": false, "error": "..."}
//                          {"event": "stopped", "reason": "...", "clean": bool}
// The controller closing its end means "stop now": the VM process exits.

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "vmm/vm_config.hpp"

namespace forkvm::vmm::control {

constexpr std::size_t kMaxControlMessage = 256 * 1024;

nlohmann::json config_to_json(const VmConfig& config);
// Throws std::invalid_argument naming the field on a wrong shape.
VmConfig config_from_json(const nlohmann::json& j);

// Sends one message; false (with errno) if the socket failed.
bool send_message(int fd, const nlohmann::json& message);
// Receives one message: nullopt on EOF or error; throws nothing. A message
// that is not a JSON object, or too large, yields an object {"invalid": true}.
std::optional<nlohmann::json> recv_message(int fd);

}  // namespace forkvm::vmm::control
