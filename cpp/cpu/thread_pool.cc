#include "cpu/thread_pool.h"

#include <chrono>
#include <thread>

namespace qwen {

ThreadPool::ThreadPool(int threads) {
  if (threads < 1) threads = 1;
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this, i] { worker_main(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    generation_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_tasks(int thread) {
  for (;;) {
    int i = next_.fetch_add(1, std::memory_order_relaxed);
    if (i >= n_) break;
    (*fn_)(i, thread);
    done_.fetch_add(1, std::memory_order_release);
  }
}

void ThreadPool::worker_main(int thread) {
  uint64_t seen = 0;
  for (;;) {
    // Spin a little: the next parallel region of a decode step usually starts within microseconds.
    uint64_t g = generation_.load(std::memory_order_acquire);
    // Every 1024 pauses the thread yields, so that on an oversubscribed machine (several models or other processes)
    // a spinning worker hands its core to the workers and callers that have work.
    for (int spin = 0; g == seen && spin < 20000; ++spin) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
      if ((spin & 1023) == 1023) std::this_thread::yield();
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return generation_.load() != seen; });
      g = generation_.load();
    }
    seen = g;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    run_tasks(thread);
    active_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::parallel_for(int n, const std::function<void(int, int)>& fn) {
  if (n <= 0) return;
  if (workers_.empty() || n == 1) {
    for (int i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    n_ = n;
    next_.store(0, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
    active_.store(int(workers_.size()), std::memory_order_relaxed);
    generation_.fetch_add(1, std::memory_order_release);
  }
  cv_.notify_all();
  run_tasks(0);
  // Wait for every task, then for every worker to leave the job, so fn_ can go out of scope safely. A worker that has
  // not been scheduled yet holds the caller here: after 1024 pauses the caller yields its core every round, else an
  // oversubscribed machine (two 16-thread models and CUDA threads on 16 cores) could turn each parallel region into a
  // scheduler time slice (suspected from a jest timeout on the 16-core GPU host; not reproduced on 2 cores).
  for (int spin = 0; done_.load(std::memory_order_acquire) < n || active_.load(std::memory_order_acquire) > 0; ++spin) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
    if (spin >= 1024) std::this_thread::yield();
  }
}

}  // namespace qwen
