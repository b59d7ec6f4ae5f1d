#include "guest/protocol/messages.hpp"

#include <array>
#include <utility>

namespace forkvm::proto {

namespace {

// Every decoder ends with this: the message if every read succeeded, else
// the Reader's first error.
template <class M>
Result<M> done(const Reader& r, M&& message) {
    if (!r.ok()) return r.error();
    return std::forward<M>(message);
}

StreamId read_stream(Reader& r) {
    const std::uint8_t v = r.u8();
    if (v > static_cast<std::uint8_t>(StreamId::exec_stderr)) r.invalid();
    return static_cast<StreamId>(v);
}

FileType read_file_type(Reader& r) {
    const std::uint8_t v = r.u8();
    if (v < static_cast<std::uint8_t>(FileType::file) || v > static_cast<std::uint8_t>(FileType::other))
        r.invalid();
    return static_cast<FileType>(v);
}

void write_enum(Writer& w, auto value) { w.u8(static_cast<std::uint8_t>(value)); }

}  // namespace

void Ready::encode(Writer& w) const {
    w.u32(protocol_version);
    w.bytes(agent_version);
    w.u64(capabilities);
}
Result<Ready> Ready::decode(Reader& r) {
    Ready m;
    m.protocol_version = r.u32();
    m.agent_version = r.string();
    m.capabilities = r.u64();
    return done(r, std::move(m));
}

void Ping::encode(Writer& w) const { w.u64(nonce); }
Result<Ping> Ping::decode(Reader& r) {
    Ping m;
    m.nonce = r.u64();
    return done(r, std::move(m));
}

void Pong::encode(Writer& w) const {
    w.u64(nonce);
    w.u64(monotonic_ns);
}
Result<Pong> Pong::decode(Reader& r) {
    Pong m;
    m.nonce = r.u64();
    m.monotonic_ns = r.u64();
    return done(r, std::move(m));
}

void ExecStart::encode(Writer& w) const {
    w.bytes_list(argv);
    w.bytes_list(env);
    w.bytes(cwd);
    w.bytes(user);
    w.u32(timeout_ms);
    w.bytes(stdin_data);
    w.u64(stdout_cap);
    w.u64(stderr_cap);
    w.u32(initial_credit);
}
Result<ExecStart> ExecStart::decode(Reader& r) {
    ExecStart m;
    m.argv = r.string_list();
    m.env = r.string_list();
    m.cwd = r.string();
    m.user = r.string();
    m.timeout_ms = r.u32();
    m.stdin_data = r.bytes();
    m.stdout_cap = r.u64();
    m.stderr_cap = r.u64();
    m.initial_credit = r.u32();
    return done(r, std::move(m));
}

void ExecStarted::encode(Writer& w) const { w.u32(pid); }
Result<ExecStarted> ExecStarted::decode(Reader& r) {
    ExecStarted m;
    m.pid = r.u32();
    return done(r, std::move(m));
}

void ExecOutput::encode(Writer& w) const {
    write_enum(w, stream);
    w.bytes(data);
}
Result<ExecOutput> ExecOutput::decode(Reader& r) {
    ExecOutput m;
    m.stream = read_stream(r);
    if (m.stream == StreamId::file_data) r.invalid();  // output is stdout or stderr
    m.data = r.bytes();
    return done(r, std::move(m));
}

void ExecExit::encode(Writer& w) const {
    w.i32(exit_code);
    w.i32(term_signal);
    w.boolean(timed_out);
    w.boolean(stdout_truncated);
    w.boolean(stderr_truncated);
    w.u64(duration_us);
}
Result<ExecExit> ExecExit::decode(Reader& r) {
    ExecExit m;
    m.exit_code = r.i32();
    m.term_signal = r.i32();
    m.timed_out = r.boolean();
    m.stdout_truncated = r.boolean();
    m.stderr_truncated = r.boolean();
    m.duration_us = r.u64();
    return done(r, std::move(m));
}

void Credit::encode(Writer& w) const {
    write_enum(w, stream);
    w.u32(bytes);
}
Result<Credit> Credit::decode(Reader& r) {
    Credit m;
    m.stream = read_stream(r);
    m.bytes = r.u32();
    return done(r, std::move(m));
}

void Cancel::encode(Writer& /*w*/) const {}
Result<Cancel> Cancel::decode(Reader& r) { return done(r, Cancel{}); }

void ReadFile::encode(Writer& w) const {
    w.bytes(path);
    w.u64(offset);
    w.u64(max_bytes);
    w.u32(initial_credit);
}
Result<ReadFile> ReadFile::decode(Reader& r) {
    ReadFile m;
    m.path = r.string();
    m.offset = r.u64();
    m.max_bytes = r.u64();
    m.initial_credit = r.u32();
    return done(r, std::move(m));
}

void ProxyOpen::encode(Writer& w) const { w.u32(initial_credit); }
Result<ProxyOpen> ProxyOpen::decode(Reader& r) {
    ProxyOpen m;
    m.initial_credit = r.u32();
    return done(r, std::move(m));
}

void ProxyData::encode(Writer& w) const { w.bytes(data); }
Result<ProxyData> ProxyData::decode(Reader& r) {
    ProxyData m;
    m.data = r.bytes();
    return done(r, std::move(m));
}

void ProxyCredit::encode(Writer& w) const { w.u32(bytes); }
Result<ProxyCredit> ProxyCredit::decode(Reader& r) {
    ProxyCredit m;
    m.bytes = r.u32();
    return done(r, std::move(m));
}

void ProxyClose::encode(Writer& w) const {
    w.bytes(reason);
    w.boolean(abort);
}
Result<ProxyClose> ProxyClose::decode(Reader& r) {
    ProxyClose m;
    m.reason = r.string();
    m.abort = r.boolean();
    return done(r, std::move(m));
}

void FileData::encode(Writer& w) const { w.bytes(data); }
Result<FileData> FileData::decode(Reader& r) {
    FileData m;
    m.data = r.bytes();
    return done(r, std::move(m));
}

void FileEnd::encode(Writer& w) const {
    w.u64(total_bytes);
    w.boolean(eof);
}
Result<FileEnd> FileEnd::decode(Reader& r) {
    FileEnd m;
    m.total_bytes = r.u64();
    m.eof = r.boolean();
    return done(r, std::move(m));
}

void WriteFileBegin::encode(Writer& w) const {
    w.bytes(path);
    w.u32(mode);
    w.boolean(create_parents);
    write_enum(w, write_mode);
    w.u64(total_size);
}
Result<WriteFileBegin> WriteFileBegin::decode(Reader& r) {
    WriteFileBegin m;
    m.path = r.string();
    m.mode = r.u32();
    m.create_parents = r.boolean();
    const std::uint8_t wm = r.u8();
    if (wm > static_cast<std::uint8_t>(WriteMode::append)) r.invalid();
    m.write_mode = static_cast<WriteMode>(wm);
    m.total_size = r.u64();
    return done(r, std::move(m));
}

void WriteFileEnd::encode(Writer& /*w*/) const {}
Result<WriteFileEnd> WriteFileEnd::decode(Reader& r) { return done(r, WriteFileEnd{}); }

void Ok::encode(Writer& /*w*/) const {}
Result<Ok> Ok::decode(Reader& r) { return done(r, Ok{}); }

void Stat::encode(Writer& w) const {
    w.bytes(path);
    w.boolean(follow_symlinks);
}
Result<Stat> Stat::decode(Reader& r) {
    Stat m;
    m.path = r.string();
    m.follow_symlinks = r.boolean();
    return done(r, std::move(m));
}

void StatResult::encode(Writer& w) const {
    write_enum(w, type);
    w.u32(mode);
    w.u64(size);
    w.i64(mtime_ns);
    w.u32(uid);
    w.u32(gid);
}
Result<StatResult> StatResult::decode(Reader& r) {
    StatResult m;
    m.type = read_file_type(r);
    m.mode = r.u32();
    m.size = r.u64();
    m.mtime_ns = r.i64();
    m.uid = r.u32();
    m.gid = r.u32();
    return done(r, std::move(m));
}

void ListDir::encode(Writer& w) const {
    w.bytes(path);
    w.u32(max_entries);
}
Result<ListDir> ListDir::decode(Reader& r) {
    ListDir m;
    m.path = r.string();
    m.max_entries = r.u32();
    return done(r, std::move(m));
}

// A DirEntry on the wire: bytes name, u8 type, u64 size, u32 mode.
void DirEntries::encode(Writer& w) const {
    w.u32(static_cast<std::uint32_t>(entries.size()));
    for (const DirEntry& e : entries) {
        w.bytes(e.name);
        write_enum(w, e.type);
        w.u64(e.size);
        w.u32(e.mode);
    }
    w.boolean(truncated);
}
Result<DirEntries> DirEntries::decode(Reader& r) {
    static constexpr std::size_t kMinEntrySize = 4 + 1 + 8 + 4;
    DirEntries m;
    const std::uint32_t n = r.count(kMinEntrySize);
    m.entries.reserve(n);
    for (std::uint32_t i = 0; i < n && r.ok(); ++i) {
        DirEntry e;
        e.name = r.string();
        e.type = read_file_type(r);
        e.size = r.u64();
        e.mode = r.u32();
        m.entries.push_back(std::move(e));
    }
    m.truncated = r.boolean();
    return done(r, std::move(m));
}

void Exists::encode(Writer& w) const { w.bytes(path); }
Result<Exists> Exists::decode(Reader& r) {
    Exists m;
    m.path = r.string();
    return done(r, std::move(m));
}

void Bool::encode(Writer& w) const { w.boolean(value); }
Result<Bool> Bool::decode(Reader& r) {
    Bool m;
    m.value = r.boolean();
    return done(r, std::move(m));
}

void Remove::encode(Writer& w) const {
    w.bytes(path);
    w.boolean(recursive);
}
Result<Remove> Remove::decode(Reader& r) {
    Remove m;
    m.path = r.string();
    m.recursive = r.boolean();
    return done(r, std::move(m));
}

void Rename::encode(Writer& w) const {
    w.bytes(from);
    w.bytes(to);
}
Result<Rename> Rename::decode(Reader& r) {
    Rename m;
    m.from = r.string();
    m.to = r.string();
    return done(r, std::move(m));
}

void Mkdir::encode(Writer& w) const {
    w.bytes(path);
    w.u32(mode);
    w.boolean(parents);
}
Result<Mkdir> Mkdir::decode(Reader& r) {
    Mkdir m;
    m.path = r.string();
    m.mode = r.u32();
    m.parents = r.boolean();
    return done(r, std::move(m));
}

void Error::encode(Writer& w) const {
    write_enum(w, code);
    w.i32(err);
    w.bytes(message);
}
Result<Error> Error::decode(Reader& r) {
    Error m;
    const std::uint8_t c = r.u8();
    if (!is_known_error_code(c)) r.invalid();
    m.code = static_cast<ErrorCode>(c);
    m.err = r.i32();
    m.message = r.string();
    return done(r, std::move(m));
}

// The variant's alternatives are in MessageType order; this keeps them so.
static_assert(std::variant_size_v<Message> == kLastMessageType);
static_assert(std::variant_alternative_t<0, Message>::kType == MessageType::ready);
static_assert(std::variant_alternative_t<kLastMessageType - 1, Message>::kType == MessageType::proxy_close);

namespace {

template <std::size_t... I>
constexpr bool types_in_order(std::index_sequence<I...>) {
    return ((static_cast<std::size_t>(std::variant_alternative_t<I, Message>::kType) == I + 1) && ...);
}
static_assert(types_in_order(std::make_index_sequence<std::variant_size_v<Message>>{}));

template <std::size_t I>
Result<Message> decode_alternative(ByteSpan payload) {
    using M = std::variant_alternative_t<I, Message>;
    Result<M> m = decode_message<M>(payload);
    if (!m) return m.error();
    return Message(std::in_place_index<I>, std::move(m).value());
}

template <std::size_t... I>
constexpr auto make_decoders(std::index_sequence<I...>) {
    return std::array<Result<Message> (*)(ByteSpan), sizeof...(I)>{&decode_alternative<I>...};
}

}  // namespace

MessageType message_type(const Message& message) noexcept {
    return static_cast<MessageType>(message.index() + 1);
}

Result<Message> decode_any(MessageType type, ByteSpan payload) {
    static constexpr auto kDecoders = make_decoders(std::make_index_sequence<std::variant_size_v<Message>>{});
    const auto raw = static_cast<std::uint8_t>(type);
    if (!is_known_message_type(raw)) return ProtoError::unknown_type;
    return kDecoders[raw - 1U](payload);
}

ProtoError append_message(Bytes& out, std::uint32_t request_id, const Message& message) {
    return std::visit([&](const auto& m) { return append_message(out, request_id, m); }, message);
}

Bytes encode_payload(const Message& message) {
    return std::visit([](const auto& m) { return encode_payload(m); }, message);
}

void FrameEncoder::consume(std::size_t n) {
    if (n >= buffer_.size()) {
        buffer_.clear();
        return;
    }
    buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(n));
}

}  // namespace forkvm::proto
