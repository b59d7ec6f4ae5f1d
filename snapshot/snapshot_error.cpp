#include "snapshot/snapshot_error.hpp"

#include <cstring>

namespace forkvm::snapshot {

std::string_view kind_name(SnapshotErrorKind kind) noexcept {
    switch (kind) {
        case SnapshotErrorKind::not_found: return "not_found";
        case SnapshotErrorKind::truncated: return "truncated";
        case SnapshotErrorKind::corrupt: return "corrupt";
        case SnapshotErrorKind::wrong_magic: return "wrong_magic";
        case SnapshotErrorKind::wrong_arch: return "wrong_arch";
        case SnapshotErrorKind::unsupported_version: return "unsupported_version";
        case SnapshotErrorKind::too_large: return "too_large";
        case SnapshotErrorKind::missing_section: return "missing_section";
        case SnapshotErrorKind::incompatible: return "incompatible";
        case SnapshotErrorKind::io: return "io";
    }
    return "unknown";
}

SnapshotError::SnapshotError(SnapshotErrorKind kind, const std::string& file, const std::string& problem)
    : std::runtime_error(file + ": " + problem), kind_(kind), file_(file) {}

SnapshotError io_error(const std::string& file, std::string_view operation, int err) {
    std::string problem(operation);
    problem += ": ";
    problem += std::strerror(err);
    problem += " (errno " + std::to_string(err) + ")";
    return {SnapshotErrorKind::io, file, problem};
}

}  // namespace forkvm::snapshot
