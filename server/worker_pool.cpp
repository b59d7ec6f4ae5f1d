#include "server/worker_pool.hpp"

#include <algorithm>

namespace forkvm::server {

WorkerPool::WorkerPool(std::size_t threads, std::size_t queue_capacity)
    : thread_count_(std::max<std::size_t>(threads, 1)), capacity_(queue_capacity) {
    threads_.reserve(thread_count_);
    for (std::size_t i = 0; i < thread_count_; ++i) threads_.emplace_back([this] { run(); });
}

WorkerPool::~WorkerPool() { shutdown(); }

bool WorkerPool::try_submit(std::function<void()> task) {
    {
        const std::lock_guard lock(mutex_);
        if (stopping_) return false;
        // Tasks beyond one per thread count against the capacity.
        if (busy_ + queue_.size() + 1 > thread_count_ + capacity_) return false;
        queue_.push_back(std::move(task));
    }
    cv_.notify_one();
    return true;
}

void WorkerPool::shutdown() {
    const std::lock_guard join_lock(shutdown_mutex_);
    {
        const std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    cv_.notify_all();
    for (auto& thread : threads_) {
        if (thread.joinable()) thread.join();
    }
    threads_.clear();
}

std::size_t WorkerPool::busy() const {
    const std::lock_guard lock(mutex_);
    return busy_;
}

void WorkerPool::run() {
    std::unique_lock lock(mutex_);
    while (true) {
        cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping, nothing left
        auto task = std::move(queue_.front());
        queue_.pop_front();
        ++busy_;
        lock.unlock();
        try {
            task();
        } catch (...) {
            // Tasks report their own errors; never let one end a worker.
        }
        task = nullptr;  // release captures (sessions) outside the lock
        lock.lock();
        --busy_;
    }
}

}  // namespace forkvm::server
