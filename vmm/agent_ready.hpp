#pragma once
// Waiting until a restored or forked VM's agent answers. Such an agent is
// already running mid-session (no Ready frame comes), so an answered ping is
// what "ready" means.

#include <chrono>

#include "vmm/agent_client.hpp"

namespace forkvm::vmm {

// Pings until the agent answers. A ping that times out is sent again with a
// longer deadline (1 s doubling up to 5 s), in case the guest was not yet
// reading; throws the last AgentError once `within` has passed, or at once
// if the channel is broken or closed.
PingResult ping_until_answer(AgentClient& agent, std::chrono::milliseconds within = std::chrono::minutes(2));

}  // namespace forkvm::vmm
