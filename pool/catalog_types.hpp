#pragma once
// What the API shows of snapshots, templates and pools (no HTTP here).

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "http_proxy/policy.hpp"
#include "pool/sandbox_registry.hpp"
#include "pool/warm_pool.hpp"

namespace forkvm::pool {

// A saved sandbox on disk (data_dir/snapshots/<id>/).
struct SnapshotInfo {
    std::string id;  // "snap-" + 16 hex digits
    std::string owner;
    std::string source_sandbox;  // the sandbox it was taken from ("" if imported)
    Labels labels;
    TimePoint created{};
    std::uint64_t disk_bytes = 0;        // allocated on disk (memory.bin is sparse)
    std::uint64_t memory_bytes = 0;      // guest RAM size
    std::vector<std::string> templates;  // names of the owner's templates made from it
    bool operator==(const SnapshotInfo&) const = default;
};

struct CreateSnapshot {
    Labels labels;
};

// Pool sizes of one template.
struct TemplatePoolSettings {
    std::size_t min_warm = 1;
    std::size_t max_warm = 2;
};

enum class TemplateState {
    ready,   // its zygote is restored; its pool forks clones
    failed,  // its snapshot could not be restored here (see error); kept, and retried on update
};

std::string_view to_string(TemplateState state) noexcept;

// A named snapshot with its own warm pool; sandboxes are created from it by name.
struct TemplateInfo {
    std::string name;  // unique per owner: [a-z0-9][a-z0-9._-]{0,62}
    std::string owner;
    std::string snapshot_id;
    TemplatePoolSettings pool;
    TimePoint created{};
    TemplateState state = TemplateState::ready;
    std::string error;          // why it failed
    PoolStats stats;            // zero when failed
    http_proxy::Policy egress;  // of the sandboxes made from it, unless they name their own
};

struct CreateTemplate {
    std::string name;
    std::string snapshot_id;
    std::optional<std::size_t> min_warm;
    std::optional<std::size_t> max_warm;
    http_proxy::Policy egress;  // the empty policy allows nothing
};

struct UpdateTemplate {
    std::optional<std::size_t> min_warm;
    std::optional<std::size_t> max_warm;
};

// One warm pool: the default one (template "") or a template's.
struct PoolInfo {
    std::string template_name;  // "" = the default pool (the golden snapshot)
    std::size_t min_warm = 0;
    std::size_t max_warm = 0;
    PoolStats stats;
};

}  // namespace forkvm::pool
