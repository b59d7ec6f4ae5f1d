// Fuzz target: AgentClient with hostile bytes as the agent's side of the
// stream while one request is pending.
// Input byte 0 picks the request (bits 0-2: ping, exec, read_file into
// memory, write_file, stat, list_dir) and the mode (bit 3):
//   mode 0: the rest is a raw byte stream.
//   mode 1: the rest describes frames ([type][id][len][len bytes]...) that
//           are encoded validly (CRC and all), so the fuzzer reaches the
//           message and request layers; id byte % 3 picks request id 0, 1
//           (the pending request: a fresh client numbers from 1) or 2.
// After the bytes the agent's end is closed. Invariants (abort() on
// violation): the call returns (no hang: its deadline is short) with a value
// or an AgentError of a known code; the client ends closed (the EOF) or
// broken (with a reason), never anything else; a broken client fails the
// next call with `broken` at once. ASan/LSan in the replay build check for
// crashes and leaks.

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <thread>

#include "guest/protocol/messages.hpp"
#include "vmm/agent_client.hpp"

using namespace std::chrono_literals;
namespace proto = forkvm::proto;
using forkvm::vmm::AgentClient;
using forkvm::vmm::AgentError;
using forkvm::vmm::AgentErrorCode;

namespace {

void check(bool condition) {
    if (!condition) std::abort();
}

bool known_code(AgentErrorCode code) {
    const auto raw = static_cast<std::uint8_t>(code);
    return proto::is_known_error_code(raw) || code == AgentErrorCode::timeout ||
           code == AgentErrorCode::broken || code == AgentErrorCode::closed;
}

void run_request(AgentClient& client, unsigned op) {
    const auto deadline = 2s;  // only reached if the EOF were lost; the EOF ends every call
    try {
        switch (op) {
            case 0: (void)client.ping(deadline); break;
            case 1: {
                forkvm::vmm::ExecRequest req;
                req.argv = {"/bin/sh", "-c", "true"};
                req.stdout_cap = 100;
                std::size_t seen = 0;
                forkvm::vmm::ExecCallbacks cb;
                cb.on_stdout = [&seen](forkvm::vmm::ByteView d) { seen += d.size(); };
                cb.on_stderr = [&seen](forkvm::vmm::ByteView d) { seen += d.size(); };
                (void)client.exec(req, cb, deadline);
                break;
            }
            case 2: (void)client.read_file({"/f", 0, 0}, deadline); break;
            case 3: {
                const proto::Bytes data(300, 'w');
                client.write_file({"/w"}, data, deadline);
                break;
            }
            case 4: (void)client.stat("/s", true, deadline); break;
            default: (void)client.list_dir("/", 10, deadline); break;
        }
    } catch (const AgentError& e) {
        check(known_code(e.code()));
    }
}

proto::Bytes build_stream(const std::uint8_t* data, std::size_t size, bool framed) {
    if (!framed) return proto::Bytes(data, data + size);
    proto::Bytes stream;
    std::size_t i = 0;
    while (i + 3 <= size) {
        const auto type = static_cast<proto::MessageType>(1 + data[i] % proto::kLastMessageType);
        const std::uint32_t id = data[i + 1] % 3U;
        const std::size_t len = std::min<std::size_t>(data[i + 2], size - i - 3);
        check(proto::append_frame(stream, type, id, proto::ByteSpan(data + i + 3, len)) ==
              proto::ProtoError::none);
        i += 3 + len;
    }
    return stream;
}

void send_all(int fd, const proto::Bytes& stream) {
    std::size_t done = 0;
    while (done < stream.size()) {
        const ssize_t n = ::send(fd, stream.data() + done, stream.size() - done, MSG_NOSIGNAL);
        if (n <= 0) return;  // the client stopped reading (broken): fine
        done += static_cast<std::size_t>(n);
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const unsigned op = data[0] & 7U;
    const bool framed = (data[0] & 8U) != 0;
    const proto::Bytes stream = build_stream(data + 1, size - 1, framed);

    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return 0;
    forkvm::UniqueFd agent(sv[1]);
    forkvm::vmm::AgentClientOptions options;
    options.max_payload = 4096;
    options.initial_credit = 64;
    options.max_buffered_bytes = 256;
    options.upload_chunk = 100;
    AgentClient client{forkvm::UniqueFd(sv[0]), options};

    std::thread caller([&client, op] { run_request(client, op); });
    send_all(agent.get(), stream);
    agent.reset();  // EOF: ends the call if the bytes did not
    caller.join();

    // The reader has seen the EOF or stopped on a violation; wait for it to say so.
    const auto until = std::chrono::steady_clock::now() + 5s;
    AgentClient::State state = client.state();
    while ((state == AgentClient::State::healthy || state == AgentClient::State::unhealthy) &&
           std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(1ms);
        state = client.state();
    }
    check(state == AgentClient::State::closed || state == AgentClient::State::broken);
    if (state == AgentClient::State::broken) {
        check(!client.broken_reason().empty());
        try {
            (void)client.ping(1s);
            check(false);
        } catch (const AgentError& e) {
            check(e.code() == AgentErrorCode::broken);
        }
    }
    check(client.in_flight() == 0);
    return 0;
}
