#pragma once
// A fixed set of threads for the blocking service calls, with a bounded
// queue: try_submit() refuses work instead of queueing without limit, so the
// server can answer 503 + Retry-After rather than pile up requests.

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace forkvm::server {

class WorkerPool {
public:
    WorkerPool(std::size_t threads, std::size_t queue_capacity);
    ~WorkerPool();
    WorkerPool(const WorkerPool&) = delete;
    WorkerPool& operator=(const WorkerPool&) = delete;

    // False when the queue is full (every thread busy) or after shutdown().
    bool try_submit(std::function<void()> task);
    // Runs what is queued, then joins. Idempotent.
    void shutdown();
    std::size_t busy() const;

private:
    void run();

    const std::size_t thread_count_;
    const std::size_t capacity_;
    std::mutex shutdown_mutex_;  // serialises shutdown() callers
    mutable std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_;
    std::size_t busy_ = 0;
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace forkvm::server
