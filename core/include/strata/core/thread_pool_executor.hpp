#pragma once
/// @file
/// ThreadPoolExecutor: an Executor on a bounded pool of threads
/// (concurrent.futures.ThreadPoolExecutor).

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "strata/core/executor.hpp"

namespace strata {

/// An Executor that runs jobs on at most max_workers() threads, in submission order
/// (concurrent.futures.ThreadPoolExecutor).
///
/// Threads start lazily: submit() starts one only when no started thread is idle, until
/// max_workers() run. Idle threads wait for more work until shutdown().
///
/// @par Thread safety  submit(), shutdown() and the accessors may be called from any thread.
/// @par Lifetime  The destructor calls shutdown(true): queued jobs still run, and it returns
/// once every worker has exited. Do not destroy the executor from one of its own jobs.
class ThreadPoolExecutor final : public Executor {
 public:
  /// Python's default size: min(32, hardware threads + 4).
  static std::size_t default_max_workers() noexcept;

  /// @param max_workers  the most threads that run at once.
  /// @throws std::invalid_argument  @p max_workers is 0.
  explicit ThreadPoolExecutor(std::size_t max_workers = default_max_workers());
  ~ThreadPoolExecutor() override;

  /// See Executor::shutdown().
  void shutdown(bool wait = true, bool cancel_futures = false) override;

  /// The bound given at construction.
  std::size_t max_workers() const noexcept { return max_workers_; }

  /// The threads started so far (never more than max_workers()); for tests and metrics.
  std::size_t worker_count() const;

 protected:
  /// Queues @p job; starts a worker thread when the queued jobs outnumber the idle workers
  /// and fewer than max_workers() threads exist.
  void do_submit(Job&& job) override;

 private:
  void work();

  const std::size_t max_workers_;
  mutable std::mutex mutex_;
  std::condition_variable work_ready_;
  std::deque<Job> queue_;             // guarded by mutex_
  std::vector<std::thread> workers_;  // guarded by mutex_; stable once shutdown_ is set
  std::size_t idle_ = 0;              // workers waiting for a job; guarded by mutex_
  bool shutdown_ = false;             // guarded by mutex_
  std::mutex join_mutex_;             // one shutdown(wait) joins at a time; the others wait
};

}  // namespace strata
