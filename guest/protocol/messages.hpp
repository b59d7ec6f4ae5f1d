#pragma once
// Message layer: one plain struct per MessageType, each with
//   static constexpr MessageType kType;
//   void encode(Writer&) const;
//   static Result<X> decode(Reader&);   // fields only; see decode_message()
// and value equality. Field order on the wire is the declaration order.
// "bytes" fields are std::string (paths, argv, names: binary-safe, may hold
// NUL or invalid UTF-8) or Bytes (bulk data). Decoding checks structure and
// enum ranges only; meaning (e.g. an empty argv) is checked by the receiver,
// which answers with an Error reply.

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "guest/protocol/error_code.hpp"
#include "guest/protocol/frame.hpp"
#include "guest/protocol/message_type.hpp"
#include "guest/protocol/result.hpp"
#include "guest/protocol/wire.hpp"

namespace forkvm::proto {

// Credit/ExecOutput stream ids. file_data is the data stream of a ReadFile or
// WriteFileBegin request (the request id says which one).
enum class StreamId : std::uint8_t { file_data = 0, exec_stdout = 1, exec_stderr = 2 };
enum class FileType : std::uint8_t { file = 1, directory = 2, symlink = 3, other = 4 };
enum class WriteMode : std::uint8_t { truncate = 0, append = 1 };

// Ready::capabilities bits.
inline constexpr std::uint64_t kCapExec = 1U << 0U;
inline constexpr std::uint64_t kCapFiles = 1U << 1U;
inline constexpr std::uint64_t kCapCredit = 1U << 2U;
inline constexpr std::uint64_t kCapProxy = 1U << 3U;  // serves the egress proxy (proxy_* messages)

#define FORKVM_PROTO_MESSAGE(Name, type_value)         \
    static constexpr MessageType kType = (type_value); \
    void encode(Writer& w) const;                      \
    static Result<Name> decode(Reader& r);             \
    bool operator==(const Name&) const = default

// Agent -> host, request_id 0, once when the agent is up.
struct Ready {
    std::uint32_t protocol_version = kProtocolVersion;
    std::string agent_version;
    std::uint64_t capabilities = 0;
    FORKVM_PROTO_MESSAGE(Ready, MessageType::ready);
};

struct Ping {
    std::uint64_t nonce = 0;
    FORKVM_PROTO_MESSAGE(Ping, MessageType::ping);
};

struct Pong {
    std::uint64_t nonce = 0;         // echoed from Ping
    std::uint64_t monotonic_ns = 0;  // agent's CLOCK_MONOTONIC
    FORKVM_PROTO_MESSAGE(Pong, MessageType::pong);
};

struct ExecStart {
    std::vector<std::string> argv;
    std::vector<std::string> env;  // "K=V" byte strings
    std::string cwd;               // "" = the user's home / agent default
    std::string user;              // "" = default unprivileged user, else a name ("root")
    std::uint32_t timeout_ms = 0;  // 0 = none
    Bytes stdin_data;              // written to stdin, which is then closed
    std::uint64_t stdout_cap = 0;  // bytes kept; more sets stdout_truncated
    std::uint64_t stderr_cap = 0;
    std::uint32_t initial_credit = 0;  // per output stream
    FORKVM_PROTO_MESSAGE(ExecStart, MessageType::exec_start);
};

struct ExecStarted {
    std::uint32_t pid = 0;
    FORKVM_PROTO_MESSAGE(ExecStarted, MessageType::exec_started);
};

struct ExecOutput {
    StreamId stream = StreamId::exec_stdout;  // exec_stdout or exec_stderr only
    Bytes data;
    FORKVM_PROTO_MESSAGE(ExecOutput, MessageType::exec_output);
};

struct ExecExit {
    std::int32_t exit_code = -1;  // -1 if killed by a signal
    std::int32_t term_signal = 0;
    bool timed_out = false;
    bool stdout_truncated = false;
    bool stderr_truncated = false;
    std::uint64_t duration_us = 0;
    FORKVM_PROTO_MESSAGE(ExecExit, MessageType::exec_exit);
};

struct Credit {
    StreamId stream = StreamId::file_data;
    std::uint32_t bytes = 0;  // added to the sender's window for that stream
    FORKVM_PROTO_MESSAGE(Credit, MessageType::credit);
};

// Stops the request whose id is in the frame header (empty payload).
struct Cancel {
    FORKVM_PROTO_MESSAGE(Cancel, MessageType::cancel);
};

struct ReadFile {
    std::string path;
    std::uint64_t offset = 0;
    std::uint64_t max_bytes = 0;  // 0 = up to EOF
    std::uint32_t initial_credit = 0;
    FORKVM_PROTO_MESSAGE(ReadFile, MessageType::read_file);
};

struct FileData {
    Bytes data;
    FORKVM_PROTO_MESSAGE(FileData, MessageType::file_data);
};

struct FileEnd {
    std::uint64_t total_bytes = 0;
    bool eof = false;  // the read stopped at end of file (not at max_bytes)
    FORKVM_PROTO_MESSAGE(FileEnd, MessageType::file_end);
};

struct WriteFileBegin {
    std::string path;
    std::uint32_t mode = 0644;
    bool create_parents = false;
    WriteMode write_mode = WriteMode::truncate;
    std::uint64_t total_size = 0;
    FORKVM_PROTO_MESSAGE(WriteFileBegin, MessageType::write_file_begin);
};

struct WriteFileEnd {
    FORKVM_PROTO_MESSAGE(WriteFileEnd, MessageType::write_file_end);
};

struct Ok {
    FORKVM_PROTO_MESSAGE(Ok, MessageType::ok);
};

struct Stat {
    std::string path;
    bool follow_symlinks = true;
    FORKVM_PROTO_MESSAGE(Stat, MessageType::stat);
};

struct StatResult {
    FileType type = FileType::file;
    std::uint32_t mode = 0;  // st_mode & 07777
    std::uint64_t size = 0;
    std::int64_t mtime_ns = 0;
    std::uint32_t uid = 0;
    std::uint32_t gid = 0;
    FORKVM_PROTO_MESSAGE(StatResult, MessageType::stat_result);
};

struct ListDir {
    std::string path;
    std::uint32_t max_entries = 0;
    FORKVM_PROTO_MESSAGE(ListDir, MessageType::list_dir);
};

struct DirEntry {
    std::string name;
    FileType type = FileType::file;
    std::uint64_t size = 0;
    std::uint32_t mode = 0;
    bool operator==(const DirEntry&) const = default;
};

struct DirEntries {
    std::vector<DirEntry> entries;
    bool truncated = false;  // more than max_entries existed
    FORKVM_PROTO_MESSAGE(DirEntries, MessageType::dir_entries);
};

struct Exists {
    std::string path;
    FORKVM_PROTO_MESSAGE(Exists, MessageType::exists);
};

struct Bool {
    bool value = false;
    FORKVM_PROTO_MESSAGE(Bool, MessageType::bool_result);
};

struct Remove {
    std::string path;
    bool recursive = false;
    FORKVM_PROTO_MESSAGE(Remove, MessageType::remove);
};

struct Rename {
    std::string from;
    std::string to;
    FORKVM_PROTO_MESSAGE(Rename, MessageType::rename);
};

struct Mkdir {
    std::string path;
    std::uint32_t mode = 0755;
    bool parents = false;
    FORKVM_PROTO_MESSAGE(Mkdir, MessageType::mkdir);
};

struct Error {
    ErrorCode code = ErrorCode::internal;
    std::int32_t err = 0;  // errno, 0 if none
    std::string message;
    FORKVM_PROTO_MESSAGE(Error, MessageType::error);
};

// Egress proxy streams (docs/agent-protocol.md, "Proxy streams"). The
// frame's request_id is the stream id, which the agent picks when a client
// connects to its loopback proxy; stream ids are a namespace of their own,
// apart from request ids. Data flows only within the receiver's credit.
struct ProxyOpen {
    std::uint32_t initial_credit = 0;  // bytes the host may send on it before a proxy_credit
    FORKVM_PROTO_MESSAGE(ProxyOpen, MessageType::proxy_open);
};

struct ProxyData {
    Bytes data;
    FORKVM_PROTO_MESSAGE(ProxyData, MessageType::proxy_data);
};

struct ProxyCredit {
    std::uint32_t bytes = 0;  // added to the receiver's window for that stream
    FORKVM_PROTO_MESSAGE(ProxyCredit, MessageType::proxy_credit);
};

// The sender sends no more data on the stream (the other direction may go
// on until it closes too). The stream is gone once both sides closed it.
struct ProxyClose {
    std::string reason;
    // The sender's end is gone entirely (a client that reset, a relay that
    // ended): the receiver stops sending too. Without it, a half-close.
    bool abort = false;
    FORKVM_PROTO_MESSAGE(ProxyClose, MessageType::proxy_close);
};

#undef FORKVM_PROTO_MESSAGE

// Every message, in MessageType order (index = type - 1).
using Message =
    std::variant<Ready, Ping, Pong, ExecStart, ExecStarted, ExecOutput, ExecExit, Credit, Cancel, ReadFile,
                 FileData, FileEnd, WriteFileBegin, WriteFileEnd, Ok, Stat, StatResult, ListDir, DirEntries,
                 Exists, Bool, Remove, Rename, Mkdir, Error, ProxyOpen, ProxyData, ProxyCredit, ProxyClose>;

[[nodiscard]] MessageType message_type(const Message& message) noexcept;

// Decodes a whole payload as M: all fields, then no trailing bytes.
template <class M>
[[nodiscard]] Result<M> decode_message(ByteSpan payload) {
    Reader r(payload);
    Result<M> m = M::decode(r);
    if (const ProtoError e = r.finish(); e != ProtoError::none) return e;
    return m;
}

// As above, after checking that the frame is of M's type.
template <class M>
[[nodiscard]] Result<M> decode_message(const Frame& frame) {
    if (frame.type != M::kType) return ProtoError::wrong_type;
    return decode_message<M>(ByteSpan(frame.payload));
}

// Decodes a payload of any known type (unknown_type outside the range).
[[nodiscard]] Result<Message> decode_any(MessageType type, ByteSpan payload);
[[nodiscard]] inline Result<Message> decode_any(const Frame& frame) {
    return decode_any(frame.type, ByteSpan(frame.payload));
}

// Appends `message` as one complete frame, serialising the payload straight
// into `out`. payload_too_large (out unchanged) if it exceeds kMaxPayload.
template <class M>
[[nodiscard]] ProtoError append_message(Bytes& out, std::uint32_t request_id, const M& message) {
    const std::size_t start = begin_frame(out);
    Writer w(out);
    message.encode(w);
    if (!w.ok()) {
        out.resize(start);
        return ProtoError::payload_too_large;
    }
    return end_frame(out, start, M::kType, request_id);
}
[[nodiscard]] ProtoError append_message(Bytes& out, std::uint32_t request_id, const Message& message);

template <class M>
[[nodiscard]] Result<Bytes> encode_message(std::uint32_t request_id, const M& message) {
    Bytes out;
    if (const ProtoError e = append_message(out, request_id, message); e != ProtoError::none) return e;
    return out;
}

// Just the payload of a message (no frame), e.g. for tests and fuzzing.
template <class M>
[[nodiscard]] Bytes encode_payload(const M& message) {
    Bytes out;
    Writer w(out);
    message.encode(w);
    return out;
}
[[nodiscard]] Bytes encode_payload(const Message& message);

// Batches outgoing frames into one buffer, so a writer issues one write()
// for many frames and can resume after a short write.
class FrameEncoder {
public:
    template <class M>
    [[nodiscard]] ProtoError add(std::uint32_t request_id, const M& message) {
        return append_message(buffer_, request_id, message);
    }
    [[nodiscard]] ProtoError add_frame(MessageType type, std::uint32_t request_id, ByteSpan payload) {
        return append_frame(buffer_, type, request_id, payload);
    }
    // Bytes not yet written out.
    [[nodiscard]] ByteSpan pending() const noexcept { return buffer_; }
    [[nodiscard]] bool empty() const noexcept { return buffer_.empty(); }
    // Drops the first n pending bytes (after a write() of n bytes).
    void consume(std::size_t n);
    void clear() noexcept { buffer_.clear(); }

private:
    Bytes buffer_;
};

}  // namespace forkvm::proto
