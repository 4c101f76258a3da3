// A small persistent thread pool for the CPU backend: parallel_for over task indices, the caller takes part.
// Workers spin briefly before sleeping because a decode step issues a few hundred short parallel regions.
#pragma once
#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qwen {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);  // total threads including the caller; >= 1
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return int(workers_.size()) + 1; }
  // Runs fn(task, thread) for task in [0, n); thread in [0, size()) is stable within one call (for scratch buffers).
  void parallel_for(int n, const std::function<void(int task, int thread)>& fn);

 private:
  void worker_main(int thread);
  void run_tasks(int thread);

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_;
  const std::function<void(int, int)>* fn_ = nullptr;
  int n_ = 0;
  std::atomic<int> next_{0};
  std::atomic<int> done_{0};
  std::atomic<int> active_{0};  // workers still inside the current job
  std::atomic<uint64_t> generation_{0};
  bool stop_ = false;
};

}  // namespace qwen
