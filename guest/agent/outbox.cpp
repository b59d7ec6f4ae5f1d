#include "guest/agent/outbox.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace forkvm::agent {

void Outbox::push_control(std::uint32_t request_id, proto::Bytes frame) {
    if (request_id != 0 && has_bulk_for(request_id)) {
        bulk_bytes_ += frame.size();
        bulk_.push_back(Entry{request_id, std::move(frame), true});
        return;
    }
    control_bytes_ += frame.size();
    control_.insert(control_.end(), frame.begin(), frame.end());
}

bool Outbox::has_bulk_for(std::uint32_t request_id) const noexcept {
    return std::any_of(bulk_.begin(), bulk_.end(),
                       [request_id](const Entry& e) { return e.request_id == request_id; });
}

void Outbox::drop_bulk_for(std::uint32_t request_id) {
    for (auto it = bulk_.begin(); it != bulk_.end();) {
        if (it->request_id == request_id && !it->in_order) {
            bulk_bytes_ -= it->frame.size();
            it = bulk_.erase(it);
        } else {
            ++it;
        }
    }
}

void Outbox::refill() {
    current_.clear();
    current_off_ = 0;
    if (!control_.empty()) {
        current_.swap(control_);
        control_bytes_ = 0;
        return;
    }
    if (!bulk_.empty()) {
        current_ = std::move(bulk_.front().frame);
        bulk_bytes_ -= current_.size();
        bulk_.pop_front();
    }
}

bool Outbox::flush(int fd, std::size_t max_bytes) {
    std::size_t written = 0;
    while (true) {
        if (current_off_ == current_.size()) {
            if (written >= max_bytes) return true;  // at a frame boundary: let the caller poll
            refill();
            if (current_.empty()) return true;
        }
        const ssize_t n = ::write(fd, current_.data() + current_off_, current_.size() - current_off_);
        if (n < 0) {
            if (errno == EINTR) continue;
            return errno == EAGAIN || errno == EWOULDBLOCK;
        }
        current_off_ += static_cast<std::size_t>(n);
        written += static_cast<std::size_t>(n);
    }
}

}  // namespace forkvm::agent
