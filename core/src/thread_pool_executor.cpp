#include "strata/core/thread_pool_executor.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

#include "strata/core/errors.hpp"
#include "strata/core/log.hpp"

namespace strata {

std::size_t ThreadPoolExecutor::default_max_workers() noexcept {
  const std::size_t cores = std::thread::hardware_concurrency();  // 0 when unknown
  return std::min<std::size_t>(32, cores + 4);
}

ThreadPoolExecutor::ThreadPoolExecutor(std::size_t max_workers) : max_workers_(max_workers) {
  if (max_workers == 0) throw std::invalid_argument("max_workers must be > 0, got 0");
}

ThreadPoolExecutor::~ThreadPoolExecutor() { shutdown(/*wait=*/true); }

std::size_t ThreadPoolExecutor::worker_count() const {
  std::lock_guard lock(mutex_);
  return workers_.size();
}

void ThreadPoolExecutor::do_submit(Job&& job) {
  Job refused;  // declared before the lock: a refused job is destroyed without the lock held
  std::unique_lock lock(mutex_);
  if (shutdown_) throw ExecutorShutdownError("cannot schedule new jobs after shutdown");
  queue_.push_back(std::move(job));
  // Each idle worker takes one queued job; start a thread for any job beyond those.
  if (queue_.size() > idle_ && workers_.size() < max_workers_) {
    try {
      workers_.emplace_back([this] { work(); });
    } catch (...) {
      if (workers_.empty()) {  // nobody would ever run the job: refuse it
        refused = std::move(queue_.back());
        queue_.pop_back();
        throw;
      }
      // Otherwise the running workers get to the job.
    }
  }
  lock.unlock();
  work_ready_.notify_one();
}

void ThreadPoolExecutor::work() {
  std::unique_lock lock(mutex_);
  for (;;) {
    while (queue_.empty() && !shutdown_) {
      ++idle_;
      work_ready_.wait(lock);
      --idle_;
    }
    if (queue_.empty()) return;  // shut down and drained
    Job job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    try {
      job();
    } catch (const std::exception& e) {
      log(LogLevel::error, std::string("exception escaped an executor job: ") + e.what());
    } catch (...) {
      log(LogLevel::error, "exception escaped an executor job: " + describe_exception(std::current_exception()));
    }
    job = nullptr;  // destroy what the job captured before taking the lock again
    lock.lock();
  }
}

void ThreadPoolExecutor::shutdown(bool wait, bool cancel_futures) {
  std::deque<Job> dropped;
  {
    std::lock_guard lock(mutex_);
    shutdown_ = true;
    if (cancel_futures) dropped.swap(queue_);
  }
  work_ready_.notify_all();
  dropped.clear();  // destructors of dropped jobs run here, without the lock held
  if (!wait) return;
  std::lock_guard join_lock(join_mutex_);
  // workers_ no longer changes: submit() refuses once shutdown_ is set.
  const auto self = std::this_thread::get_id();
  for (std::thread& t : workers_) {
    if (!t.joinable()) continue;
    if (t.get_id() == self) continue;  // a worker shutting down its own pool: cannot wait for itself
    t.join();
  }
}

}  // namespace strata
