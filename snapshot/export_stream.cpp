#include "snapshot/export_stream.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

#include "snapshot/manifest.hpp"
#include "snapshot/sha256.hpp"
#include "snapshot/snapshot_error.hpp"
#include "snapshot/state_file.hpp"
#include "vmm/unique_fd.hpp"

namespace forkvm::snapshot {

namespace {

constexpr std::string_view kMagic = "FORKVM-SNAPSHOT\n";
static_assert(kMagic.size() == 16);
constexpr std::size_t kChunk = 1 << 20;
constexpr std::size_t kPage = 4096;
constexpr const char* kStreamName = "<export stream>";

struct FileSpec {
    std::string_view name;
    std::uint64_t ImportLimits::*limit;
};
// The files of a snapshot directory, in stream order.
constexpr std::array<FileSpec, 3> kFiles = {{
    {kManifestFileName, &ImportLimits::max_manifest_bytes},
    {kStateFileName, &ImportLimits::max_state_bytes},
    {kMemoryFileName, &ImportLimits::max_memory_bytes},
}};

std::span<const std::uint8_t> bytes_of(std::string_view text) {
    return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

// --- writing ---------------------------------------------------------------

class Deflater {
public:
    explicit Deflater(const ExportSink& sink) : sink_(sink), out_(256 * 1024) {
        // Level 1: guest memory is mostly zero pages, which any level squeezes;
        // the rest (code, heap) gains little from slower levels.
        if (deflateInit(&z_, 1) != Z_OK)
            throw SnapshotError(SnapshotErrorKind::io, kStreamName, "deflateInit failed");
    }
    ~Deflater() { deflateEnd(&z_); }
    Deflater(const Deflater&) = delete;
    Deflater& operator=(const Deflater&) = delete;

    void write(std::span<const std::uint8_t> data) {
        hash_.update(data);
        run(data, Z_NO_FLUSH);
    }
    void finish() {
        const auto digest = hash_.finish();
        run(std::span<const std::uint8_t>(digest.data(), digest.size()), Z_FINISH);
    }

private:
    void run(std::span<const std::uint8_t> data, int flush) {
        z_.next_in = const_cast<Bytef*>(data.data());  // zlib's API is not const-correct
        z_.avail_in = static_cast<uInt>(data.size());
        for (;;) {
            z_.next_out = out_.data();
            z_.avail_out = static_cast<uInt>(out_.size());
            const int rc = deflate(&z_, flush);
            if (rc == Z_STREAM_ERROR)
                throw SnapshotError(SnapshotErrorKind::io, kStreamName, "deflate failed");
            const std::size_t produced = out_.size() - z_.avail_out;
            if (produced > 0) sink_(std::span<const std::uint8_t>(out_.data(), produced));
            if (flush == Z_FINISH ? rc == Z_STREAM_END : (z_.avail_in == 0 && z_.avail_out != 0)) break;
        }
    }

    const ExportSink& sink_;
    z_stream z_{};
    std::vector<std::uint8_t> out_;
    Sha256Stream hash_{kStreamName};
};

UniqueFd open_read(const std::string& path, std::uint64_t& size) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
    if (!fd) {
        const int err = errno;
        if (err == ENOENT) throw SnapshotError(SnapshotErrorKind::not_found, path, "no such file");
        throw io_error(path, "open", err);
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw io_error(path, "fstat", errno);
    if (!S_ISREG(st.st_mode)) throw SnapshotError(SnapshotErrorKind::io, path, "not a regular file");
    size = static_cast<std::uint64_t>(st.st_size);
    return fd;
}

// --- reading ---------------------------------------------------------------

class Inflater {
public:
    explicit Inflater(const ExportSource& source) : source_(source), in_(256 * 1024) {
        if (inflateInit(&z_) != Z_OK)
            throw SnapshotError(SnapshotErrorKind::io, kStreamName, "inflateInit failed");
    }
    ~Inflater() { inflateEnd(&z_); }
    Inflater(const Inflater&) = delete;
    Inflater& operator=(const Inflater&) = delete;

    // Fills `out` whole (hashing it unless told not to); truncated if the stream ends first.
    void read(std::span<std::uint8_t> out, bool hash = true) {
        z_.next_out = out.data();
        z_.avail_out = static_cast<uInt>(out.size());
        while (z_.avail_out > 0) {
            if (ended_)
                throw SnapshotError(SnapshotErrorKind::truncated, kStreamName, "the stream ends early");
            if (z_.avail_in == 0) refill();
            const int rc = inflate(&z_, Z_NO_FLUSH);
            if (rc == Z_STREAM_END) {
                ended_ = true;
            } else if (rc == Z_BUF_ERROR && z_.avail_in == 0 && source_done_) {
                throw SnapshotError(SnapshotErrorKind::truncated, kStreamName, "the stream ends early");
            } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
                throw SnapshotError(
                    SnapshotErrorKind::corrupt, kStreamName,
                    std::string("bad compressed data: ") + (z_.msg != nullptr ? z_.msg : "zlib error"));
            }
        }
        if (hash) hash_.update(out);
    }
    Sha256Digest digest() { return hash_.finish(); }
    // After the trailer: the zlib stream must end here, with nothing after it.
    void expect_end() {
        if (!ended_) {
            std::uint8_t extra = 0;
            z_.next_out = &extra;
            z_.avail_out = 1;
            for (;;) {
                if (z_.avail_in == 0) refill();
                const int rc = inflate(&z_, Z_NO_FLUSH);
                if (rc == Z_STREAM_END && z_.avail_out == 1) break;
                if (z_.avail_out == 0)
                    throw SnapshotError(SnapshotErrorKind::corrupt, kStreamName, "data after the trailer");
                if (rc == Z_BUF_ERROR && source_done_ && z_.avail_in == 0) {
                    throw SnapshotError(SnapshotErrorKind::truncated, kStreamName, "the stream ends early");
                }
                if (rc != Z_OK && rc != Z_BUF_ERROR) {
                    throw SnapshotError(SnapshotErrorKind::corrupt, kStreamName,
                                        "bad compressed data at the end");
                }
            }
        }
        if (z_.avail_in > 0)
            throw SnapshotError(SnapshotErrorKind::corrupt, kStreamName, "bytes after the zlib stream");
        std::array<std::uint8_t, 64> probe{};
        if (!source_done_ && source_(probe) > 0) {
            throw SnapshotError(SnapshotErrorKind::corrupt, kStreamName, "bytes after the zlib stream");
        }
    }

private:
    void refill() {
        if (source_done_) return;
        const std::size_t n = source_(in_);
        if (n == 0) source_done_ = true;
        z_.next_in = in_.data();
        z_.avail_in = static_cast<uInt>(n);
    }

    const ExportSource& source_;
    z_stream z_{};
    std::vector<std::uint8_t> in_;
    bool source_done_ = false;
    bool ended_ = false;
    Sha256Stream hash_{kStreamName};
};

bool all_zero(std::span<const std::uint8_t> bytes) {
    return std::all_of(bytes.begin(), bytes.end(), [](std::uint8_t b) { return b == 0; });
}

// Copies `size` bytes from the stream into a new file; zero pages become holes.
void write_file_from(Inflater& in, const std::string& path, std::uint64_t size) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) throw io_error(path, "create", errno);
    std::vector<std::uint8_t> buffer(kChunk);
    std::uint64_t done = 0;
    while (done < size) {
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), size - done));
        in.read(std::span(buffer.data(), n));
        for (std::size_t at = 0; at < n; at += kPage) {
            const std::size_t len = std::min(kPage, n - at);
            const std::span<const std::uint8_t> page(buffer.data() + at, len);
            if (all_zero(page)) continue;
            std::size_t written = 0;
            while (written < len) {
                const auto w = ::pwrite(fd.get(), page.data() + written, len - written,
                                        static_cast<off_t>(done + at + written));
                if (w < 0) {
                    if (errno == EINTR) continue;
                    throw io_error(path, "write", errno);
                }
                written += static_cast<std::size_t>(w);
            }
        }
        done += n;
    }
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) throw io_error(path, "ftruncate", errno);
    if (::fsync(fd.get()) != 0) throw io_error(path, "fsync", errno);
}

}  // namespace

void write_export(const std::string& dir, const nlohmann::json& meta, const ExportSink& sink) {
    std::array<UniqueFd, kFiles.size()> fds;
    std::array<std::uint64_t, kFiles.size()> sizes{};
    nlohmann::json files = nlohmann::json::array();
    for (std::size_t i = 0; i < kFiles.size(); ++i) {
        fds[i] = open_read(dir + "/" + std::string(kFiles[i].name), sizes[i]);
        files.push_back({{"name", kFiles[i].name}, {"size", sizes[i]}});
    }
    const nlohmann::json header = {{"stream_format", kExportStreamFormat},
                                   {"snapshot_format", kFormatVersion},
                                   {"meta", meta},
                                   {"files", files}};
    const std::string header_text = header.dump();
    if (header_text.size() > kMaxExportHeader) {
        throw SnapshotError(SnapshotErrorKind::too_large, kStreamName, "metadata too large to export");
    }
    Deflater out(sink);
    out.write(bytes_of(kMagic));
    const auto length = static_cast<std::uint32_t>(header_text.size());
    const std::array<std::uint8_t, 4> length_le = {
        static_cast<std::uint8_t>(length), static_cast<std::uint8_t>(length >> 8),
        static_cast<std::uint8_t>(length >> 16), static_cast<std::uint8_t>(length >> 24)};
    out.write(length_le);
    out.write(bytes_of(header_text));
    std::vector<std::uint8_t> buffer(kChunk);
    for (std::size_t i = 0; i < kFiles.size(); ++i) {
        const std::string path = dir + "/" + std::string(kFiles[i].name);
        std::uint64_t left = sizes[i];
        while (left > 0) {
            const auto n = ::read(fds[i].get(), buffer.data(),
                                  static_cast<std::size_t>(std::min<std::uint64_t>(buffer.size(), left)));
            if (n < 0) {
                if (errno == EINTR) continue;
                throw io_error(path, "read", errno);
            }
            if (n == 0)
                throw SnapshotError(SnapshotErrorKind::truncated, path, "the file shrank while exporting");
            out.write(std::span<const std::uint8_t>(buffer.data(), static_cast<std::size_t>(n)));
            left -= static_cast<std::uint64_t>(n);
        }
    }
    out.finish();
}

nlohmann::json read_export(const ExportSource& source, const std::string& dir, const ImportLimits& limits) {
    Inflater in(source);
    std::array<std::uint8_t, kMagic.size()> magic{};
    in.read(magic);
    if (std::memcmp(magic.data(), kMagic.data(), kMagic.size()) != 0) {
        throw SnapshotError(SnapshotErrorKind::wrong_magic, kStreamName, "not a forkvm snapshot export");
    }
    std::array<std::uint8_t, 4> length_le{};
    in.read(length_le);
    const std::uint32_t length =
        static_cast<std::uint32_t>(length_le[0]) | (static_cast<std::uint32_t>(length_le[1]) << 8) |
        (static_cast<std::uint32_t>(length_le[2]) << 16) | (static_cast<std::uint32_t>(length_le[3]) << 24);
    if (length == 0 || length > kMaxExportHeader) {
        throw SnapshotError(SnapshotErrorKind::corrupt, kStreamName,
                            "header length " + std::to_string(length) + " is out of range");
    }
    std::string header_text(length, '\0');
    in.read(std::span(reinterpret_cast<std::uint8_t*>(header_text.data()), header_text.size()));
    const auto header = nlohmann::json::parse(header_text, nullptr, false);
    if (!header.is_object())
        throw SnapshotError(SnapshotErrorKind::corrupt, kStreamName, "the header is not a JSON object");
    const auto number = [&](const nlohmann::json& j, const char* key) -> std::uint64_t {
        const auto it = j.find(key);
        if (it == j.end() || !it->is_number_unsigned()) {
            throw SnapshotError(SnapshotErrorKind::corrupt, kStreamName,
                                std::string("header field ") + key + " is missing or not a count");
        }
        return it->get<std::uint64_t>();
    };
    if (number(header, "stream_format") != kExportStreamFormat) {
        throw SnapshotError(SnapshotErrorKind::unsupported_version, kStreamName,
                            "export stream format " + std::to_string(number(header, "stream_format")) +
                                " (this build reads " + std::to_string(kExportStreamFormat) + ")");
    }
    if (number(header, "snapshot_format") != kFormatVersion) {
        throw SnapshotError(SnapshotErrorKind::unsupported_version, kStreamName,
                            "snapshot format " + std::to_string(number(header, "snapshot_format")) +
                                " (this build reads " + std::to_string(kFormatVersion) + ")");
    }
    const auto files = header.find("files");
    if (files == header.end() || !files->is_array() || files->size() != kFiles.size()) {
        throw SnapshotError(SnapshotErrorKind::corrupt, kStreamName,
                            "the header must list exactly the snapshot's three files");
    }
    std::array<std::uint64_t, kFiles.size()> sizes{};
    for (std::size_t i = 0; i < kFiles.size(); ++i) {
        const auto& entry = (*files)[i];
        if (!entry.is_object() || !entry.contains("name") || entry["name"] != kFiles[i].name) {
            throw SnapshotError(SnapshotErrorKind::corrupt, kStreamName,
                                "file " + std::to_string(i) + " must be " + std::string(kFiles[i].name));
        }
        sizes[i] = number(entry, "size");
        if (sizes[i] > limits.*(kFiles[i].limit)) {
            throw SnapshotError(SnapshotErrorKind::too_large, kStreamName,
                                std::string(kFiles[i].name) + " of " + std::to_string(sizes[i]) +
                                    " bytes is above the limit of " +
                                    std::to_string(limits.*(kFiles[i].limit)));
        }
    }
    const nlohmann::json meta = header.value("meta", nlohmann::json::object());

    if (::mkdir(dir.c_str(), 0700) != 0) throw io_error(dir, "mkdir", errno);
    for (std::size_t i = 0; i < kFiles.size(); ++i) {
        write_file_from(in, dir + "/" + std::string(kFiles[i].name), sizes[i]);
    }
    const Sha256Digest expected = in.digest();
    Sha256Digest trailer{};
    in.read(trailer, false);
    if (trailer != expected) {
        throw SnapshotError(SnapshotErrorKind::corrupt, kStreamName,
                            "the trailer's SHA-256 does not match the stream");
    }
    in.expect_end();
    return meta.is_object() ? meta : nlohmann::json::object();
}

}  // namespace forkvm::snapshot
