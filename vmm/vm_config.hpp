#pragma once
// The shape of one VM: vCPUs, memory, kernel, initramfs, command line.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace forkvm::vmm {

// The device the guest agent talks on: the virtio console (/dev/hvc0, the
// default: a page per VM exit) or the COM2 UART (/dev/ttyS1, a VM exit per
// byte; the fallback, and what snapshots from before the virtio console used).
enum class AgentChannel { virtio, uart };
[[nodiscard]] std::string_view to_string(AgentChannel channel);
[[nodiscard]] std::optional<AgentChannel> agent_channel_from_string(std::string_view name);

struct VmConfig {
    unsigned vcpu_count = 1;
    std::uint64_t memory_mb = 256;
    std::string kernel_path;
    std::string initrd_path;
    // Appended to the built-in arguments (see kDefaultKernelArgs).
    std::string kernel_args;
    AgentChannel agent_channel = AgentChannel::virtio;

    static constexpr std::uint64_t kMinMemoryMb = 64;
    static constexpr std::uint64_t kMaxMemoryMb = 64 * 1024;
    static constexpr unsigned kMaxVcpus = 1;  // SMP needs an MP table: not yet built
};

// One problem with a field, e.g. {"memory_mb", "32", "must be at least 64"}.
struct ConfigProblem {
    std::string field;
    std::string value;
    std::string problem;
    [[nodiscard]] std::string to_string() const;
};

// Every problem in `config` (empty when valid): 0 vCPUs, memory below 64 MiB
// or beyond what this host can back, empty or missing kernel/initrd paths.
[[nodiscard]] std::vector<ConfigProblem> validate(const VmConfig& config);

// The kernel arguments forkvm always passes, chosen for a fast, quiet boot
// on the devices forkvm emulates (vm_config.cpp says why each is there).
extern const char* const kDefaultKernelArgs;

// The full command line for `config`.
[[nodiscard]] std::string kernel_command_line(const VmConfig& config);

}  // namespace forkvm::vmm
