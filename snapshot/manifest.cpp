#include "snapshot/manifest.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <vector>

#include "snapshot/file_io.hpp"
#include "snapshot/memory_file.hpp"
#include "snapshot/snapshot_error.hpp"

namespace forkvm::snapshot {
namespace {

constexpr std::string_view kFormatName = "forkvm-snapshot";

using nlohmann::json;

std::string join(const std::string& dir, std::string_view name) {
    return (std::filesystem::path(dir) / std::string(name)).string();
}

[[noreturn]] void corrupt(const std::string& source, const std::string& problem) {
    throw SnapshotError(SnapshotErrorKind::corrupt, source, problem);
}

const json& field(const json& object, const char* key, const std::string& source) {
    auto it = object.find(key);
    if (it == object.end()) corrupt(source, std::string("manifest field '") + key + "' is missing");
    return *it;
}

std::uint64_t unsigned_field(const json& object, const char* key, const std::string& source) {
    const json& value = field(object, key, source);
    if (!value.is_number_unsigned()) {
        corrupt(source, std::string("manifest field '") + key + "' is not an unsigned integer");
    }
    return value.get<std::uint64_t>();
}

std::string string_field(const json& object, const char* key, const std::string& source) {
    const json& value = field(object, key, source);
    if (!value.is_string()) corrupt(source, std::string("manifest field '") + key + "' is not a string");
    return value.get<std::string>();
}

Sha256Digest digest_field(const json& object, const char* key, const std::string& source) {
    Sha256Digest digest{};
    if (!from_hex(string_field(object, key, source), digest)) {
        corrupt(source, std::string("manifest field '") + key + "' is not 64 hex digits");
    }
    return digest;
}

json file_entry(std::uint64_t size, const Sha256Digest& digest) {
    return json{{"size", size}, {"sha256", to_hex(digest)}};
}

const json& object_field(const json& object, const char* key, const std::string& source) {
    const json& value = field(object, key, source);
    if (!value.is_object()) corrupt(source, std::string("manifest field '") + key + "' is not an object");
    return value;
}

}  // namespace

std::string manifest_to_json(const Manifest& manifest) {
    json doc = {
        {"format", kFormatName},
        {"format_version", manifest.format_version},
        {"created_unix", manifest.created_unix},
        {"product_version", manifest.product_version},
        {"memory", file_entry(manifest.memory_size, manifest.memory_sha256)},
        {"state", file_entry(manifest.state_size, manifest.state_sha256)},
    };
    return doc.dump(2) + "\n";
}

Manifest manifest_from_json(std::string_view text, const std::string& source) {
    json doc = json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) corrupt(source, "manifest is not valid JSON");
    if (!doc.is_object()) corrupt(source, "manifest is not a JSON object");
    if (string_field(doc, "format", source) != kFormatName) {
        throw SnapshotError(SnapshotErrorKind::wrong_magic, source, "not a forkvm snapshot manifest");
    }
    // The version decides how the rest is read, so it is checked first.
    std::uint64_t version = unsigned_field(doc, "format_version", source);
    if (version != kFormatVersion) {
        throw SnapshotError(SnapshotErrorKind::unsupported_version, source,
                            "format version " + std::to_string(version) + " is " +
                                (version > kFormatVersion ? "newer" : "older") +
                                " than this build supports (" + std::to_string(kFormatVersion) + ")");
    }
    Manifest manifest;
    manifest.format_version = static_cast<std::uint32_t>(version);
    const json& created = field(doc, "created_unix", source);
    if (!created.is_number_integer() ||
        (created.is_number_unsigned() &&
         created.get<std::uint64_t>() >
             static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))) {
        corrupt(source, "manifest field 'created_unix' is not a 64-bit integer");
    }
    manifest.created_unix = created.get<std::int64_t>();
    manifest.product_version = string_field(doc, "product_version", source);
    if (manifest.product_version.size() > kMaxProductVersionLength) {
        corrupt(source, "manifest field 'product_version' is too long");
    }
    const json& memory = object_field(doc, "memory", source);
    manifest.memory_size = unsigned_field(memory, "size", source);
    manifest.memory_sha256 = digest_field(memory, "sha256", source);
    const json& state = object_field(doc, "state", source);
    manifest.state_size = unsigned_field(state, "size", source);
    manifest.state_sha256 = digest_field(state, "sha256", source);
    return manifest;
}

void write_manifest(const std::string& path, const Manifest& manifest) {
    std::string text = manifest_to_json(manifest);
    write_file_atomic(path, std::span(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

Manifest read_manifest(const std::string& path) {
    std::vector<std::uint8_t> bytes = read_file_capped(path, kMaxManifestSize);
    return manifest_from_json(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()),
                              path);
}

Manifest finalize_snapshot_dir(const std::string& dir, const StateFile& state,
                               std::string_view product_version) {
    const std::string memory_path = join(dir, kMemoryFileName);
    if (product_version.size() > kMaxProductVersionLength) {
        throw std::invalid_argument("snapshot: product version string is too long");
    }
    Manifest manifest;
    manifest.product_version = std::string(product_version);
    manifest.created_unix =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
            .count();

    struct stat st {};
    if (::stat(memory_path.c_str(), &st) != 0) {
        int err = errno;
        if (err == ENOENT) throw SnapshotError(SnapshotErrorKind::not_found, memory_path, "no such file");
        throw io_error(memory_path, "stat", err);
    }
    if (!S_ISREG(st.st_mode)) throw SnapshotError(SnapshotErrorKind::io, memory_path, "not a regular file");
    manifest.memory_size = static_cast<std::uint64_t>(st.st_size);
    manifest.memory_sha256 = sha256_file(memory_path);
    // Re-check after hashing: a writer still appending would make the
    // recorded size and digest disagree.
    check_memory_file(memory_path, manifest.memory_size);

    std::vector<std::uint8_t> state_bytes = state.serialize();
    manifest.state_size = state_bytes.size();
    manifest.state_sha256 = sha256(state_bytes);
    write_file_atomic(join(dir, kStateFileName), state_bytes);
    write_manifest(join(dir, kManifestFileName), manifest);
    return manifest;
}

VerifiedSnapshot verify_snapshot_dir(const std::string& dir, bool deep, const ParseOptions& options) {
    std::error_code ec;
    if (!std::filesystem::is_directory(dir, ec)) {
        if (!std::filesystem::exists(dir, ec)) {
            throw SnapshotError(SnapshotErrorKind::not_found, dir, "no such snapshot directory");
        }
        throw SnapshotError(SnapshotErrorKind::io, dir, "not a directory");
    }
    const std::string memory_path = join(dir, kMemoryFileName);
    const std::string state_path = join(dir, kStateFileName);

    Manifest manifest = read_manifest(join(dir, kManifestFileName));
    check_memory_file(memory_path, manifest.memory_size);

    std::vector<std::uint8_t> state_bytes = read_file_capped(state_path, options.max_size);
    StateFile state = StateFile::parse(state_bytes, state_path, options);
    if (state_bytes.size() != manifest.state_size || sha256(state_bytes) != manifest.state_sha256) {
        // Each file is valid on its own, but they come from different snapshots.
        corrupt(state_path, "does not match the manifest (size or sha256 differ)");
    }
    if (deep && sha256_file(memory_path) != manifest.memory_sha256) {
        corrupt(memory_path, "sha256 mismatch against the manifest (file corrupt)");
    }
    return VerifiedSnapshot{std::move(manifest), std::move(state)};
}

}  // namespace forkvm::snapshot
