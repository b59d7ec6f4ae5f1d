#pragma once
// Outbox: the agent's outgoing frame queue, written to the non-blocking
// channel. Two classes of frames:
//   control — replies (Pong, Ok, Error, ExecStarted, ExecExit, Credit, ...);
//   bulk    — data (ExecOutput, FileData), each frame small (Options::bulk_chunk).
// At every frame boundary control goes first, so a Pong waits for at most the
// one bulk frame already being written. A control frame that must stay
// behind its request's queued data (ExecExit after the last ExecOutput,
// FileEnd after the last FileData) is queued in order behind that data.

#include <cstddef>
#include <cstdint>
#include <deque>

#include "guest/protocol/messages.hpp"

namespace forkvm::agent {

class Outbox {
public:
    // Control reply. If `request_id` still has bulk frames queued, it is
    // queued behind them (same order as produced), otherwise ahead of all bulk.
    template <class M>
    void control(std::uint32_t request_id, const M& message) {
        proto::Bytes frame;
        if (proto::append_message(frame, request_id, message) != proto::ProtoError::none) {
            // Only an oversized payload can fail; every reply we build is small
            // except DirEntries, which the caller bounds. Report it instead.
            frame.clear();
            (void)proto::append_message(frame, request_id,
                                        proto::Error{proto::ErrorCode::too_large, 0, "reply too large"});
        }
        push_control(request_id, std::move(frame));
    }
    // Bulk data frame (ExecOutput, FileData).
    template <class M>
    void bulk(std::uint32_t request_id, const M& message) {
        proto::Bytes frame;
        if (proto::append_message(frame, request_id, message) != proto::ProtoError::none) return;
        bulk_bytes_ += frame.size();
        bulk_.push_back(Entry{request_id, std::move(frame)});
    }

    // Writes until the fd would block or, once at least `max_bytes` went
    // out, at the next frame boundary (so a caller that keeps the channel
    // busy still polls for requests between bursts). Returns false on a
    // fatal write error (EPIPE, ...); EAGAIN is not an error.
    [[nodiscard]] bool flush(int fd, std::size_t max_bytes = SIZE_MAX);

    [[nodiscard]] bool empty() const noexcept {
        return current_.empty() && control_.empty() && bulk_.empty();
    }
    [[nodiscard]] std::size_t bulk_bytes() const noexcept { return bulk_bytes_; }
    [[nodiscard]] std::size_t control_bytes() const noexcept { return control_bytes_; }
    [[nodiscard]] bool has_bulk_for(std::uint32_t request_id) const noexcept;
    // Drops queued (not yet started) bulk frames of a request, e.g. a cancelled read.
    void drop_bulk_for(std::uint32_t request_id);

private:
    struct Entry {
        std::uint32_t request_id = 0;
        proto::Bytes frame;
        bool in_order = false;  // a control frame queued behind bulk data
    };
    void push_control(std::uint32_t request_id, proto::Bytes frame);
    // Moves the next frame(s) into current_: all pending control frames, or
    // else the next bulk entry.
    void refill();

    proto::Bytes control_;  // concatenated control frames
    std::size_t control_bytes_ = 0;
    std::deque<Entry> bulk_;
    std::size_t bulk_bytes_ = 0;
    proto::Bytes current_;  // being written
    std::size_t current_off_ = 0;
};

}  // namespace forkvm::agent
