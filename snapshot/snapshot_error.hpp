#pragma once
// SnapshotError: every failure of reading, writing or verifying a snapshot,
// with a kind the caller can branch on and a message that names the file
// and the problem, e.g. "state.bin: checksum mismatch (file corrupt)".

#include <stdexcept>
#include <string>
#include <string_view>

namespace forkvm::snapshot {

enum class SnapshotErrorKind {
    not_found,            // a snapshot file or directory does not exist
    truncated,            // a file is shorter than its header or manifest says
    corrupt,              // checksum mismatch or a malformed structure
    wrong_magic,          // not a forkvm snapshot file at all
    wrong_arch,           // a snapshot of another architecture
    unsupported_version,  // a format version (or flag) this build cannot read
    too_large,            // larger than the reader's size cap
    missing_section,      // a section the caller needs is absent
    incompatible,         // host CPUID / KVM capabilities differ (VM code)
    io,                   // a system call failed (permissions, disk full, ...)
};

// Stable lower-case name of a kind, for logs and API error bodies.
[[nodiscard]] std::string_view kind_name(SnapshotErrorKind kind) noexcept;

class SnapshotError : public std::runtime_error {
public:
    // file: the path (or a name like "<memory>") the error is about.
    SnapshotError(SnapshotErrorKind kind, const std::string& file, const std::string& problem);

    [[nodiscard]] SnapshotErrorKind kind() const noexcept { return kind_; }
    [[nodiscard]] const std::string& file() const noexcept { return file_; }

private:
    SnapshotErrorKind kind_;
    std::string file_;
};

// An io-kind error for a failed system call: "<file>: <operation>: <strerror> (errno N)".
[[nodiscard]] SnapshotError io_error(const std::string& file, std::string_view operation, int err);

}  // namespace forkvm::snapshot
