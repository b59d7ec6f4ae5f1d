#include "vmm/agent_ready.hpp"

#include <algorithm>

#include "vmm/agent_error.hpp"

namespace forkvm::vmm {

PingResult ping_until_answer(AgentClient& agent, std::chrono::milliseconds within) {
    using std::chrono::milliseconds;
    const auto give_up = AgentClock::now() + within;
    milliseconds attempt(1000);
    for (;;) {
        const auto deadline = std::min(give_up, AgentClock::now() + attempt);
        try {
            return agent.ping(deadline);
        } catch (const AgentError& e) {
            if (e.code() != AgentErrorCode::timeout || AgentClock::now() >= give_up) throw;
        }
        attempt = std::min(attempt * 2, milliseconds(5000));
    }
}

}  // namespace forkvm::vmm
