#pragma once
// The one translation of agent-channel errors (vmm::AgentError) into the
// service's typed errors (ServiceError), so every sandbox call reports guest
// failures the same way. Pure: the side effects of a lost channel (marking
// the sandbox broken, destroying its VM) are the manager's job.
//
//   not_found                          -> not_found (message names the path)
//   permission_denied                  -> forbidden
//   already_exists, not_a_directory,
//   is_a_directory, not_empty          -> conflict
//   invalid_argument, unsupported      -> invalid_argument (field = the path's field, if any)
//   too_large                          -> payload_too_large
//   timeout                            -> timeout
//   busy                               -> conflict ("sandbox busy"): too many calls at once on
//                                         this sandbox; like a fork that finds it busy, the
//                                         client may retry after its other calls finished
//   cancelled                          -> unavailable (the caller asked to stop; it is gone)
//   broken, closed                     -> vm_broken
//   io, internal, protocol             -> guest_error

#include <optional>
#include <string>

#include "pool/service_error.hpp"
#include "vmm/agent_error.hpp"

namespace forkvm::pool {

// What the failed call was about, for the message and the error's field.
struct AgentCallContext {
    std::string path;                  // the guest path of a file call; "" for exec
    std::optional<std::string> field;  // request field naming `path` ("path", "from", ...)
};

[[nodiscard]] ServiceError to_service_error(const vmm::AgentError& error,
                                            const AgentCallContext& context = {});

// True for the codes that mean the VM's channel is gone (broken, closed).
[[nodiscard]] bool is_channel_lost(vmm::AgentErrorCode code) noexcept;

}  // namespace forkvm::pool
