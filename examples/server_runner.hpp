// server_runner.hpp: the part of the example-server contract that every server shares, for
// any listener: N loops on N threads sharing one port (SO_REUSEPORT), the ready line, the
// graceful shutdown on SIGINT or SIGTERM, and the reports on SIGUSR1 (every loop's pending
// tasks with their await chains) and SIGUSR2 (every loop's metrics), written to stderr.
//
// A server describes one loop's listener as a type L (movable) with
//   static Coro<L> open_first(bool reuse_port)   the first loop's, on the port of the options
//   static Coro<L> open(std::uint16_t port, bool reuse_port)   another loop's, on that port
//   std::uint16_t port() const;  std::string host() const;   (what the ready line shows)
//   Coro<void> shut_down();      (stop accepting, let in-flight work end, close the rest)
// and calls run_server<L>(program, threads, loop).
//
// A listener whose loop has state that must outlive the loop (what callbacks posted to the
// loop, or connections destroyed with it, refer to) declares it as L::State (default-
// constructible): the runner then makes one per loop, on the loop's thread, before the loop
// starts, destroys it there after the loop has closed, and passes it first to open_first() and
// open():
//   static Coro<L> open_first(L::State& state, bool reuse_port)
//   static Coro<L> open(L::State& state, std::uint16_t port, bool reuse_port)
#pragma once

#include <strata/core/diagnostics.hpp>
#include <strata/core/errors.hpp>
#include <strata/core/event.hpp>
#include <strata/core/event_loop.hpp>
#include <strata/core/future.hpp>
#include <strata/core/run.hpp>
#include <strata/core/task.hpp>

#include <sys/resource.h>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace strata::examples {

inline std::string describe_error(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return describe_exception(error);
  }
}

namespace detail {

template <class L>
concept HasLoopState = requires { typename L::State; };

template <class L>
struct LoopStateOf {
  struct type {};  // L has none
};
template <HasLoopState L>
struct LoopStateOf<L> {
  using type = typename L::State;
};
/// What the runner keeps for one loop of L, from before the loop starts until after it closed.
template <class L>
using LoopState = typename LoopStateOf<L>::type;

template <class L>
Coro<L> open_first_listener([[maybe_unused]] LoopState<L>& state, bool reuse_port) {
  if constexpr (HasLoopState<L>) {
    return L::open_first(state, reuse_port);
  } else {
    return L::open_first(reuse_port);
  }
}

template <class L>
Coro<L> open_listener([[maybe_unused]] LoopState<L>& state, std::uint16_t port, bool reuse_port) {
  if constexpr (HasLoopState<L>) {
    return L::open(state, port, reuse_port);
  } else {
    return L::open(port, reuse_port);
  }
}

/// A loop on a thread of its own (--threads N: N - 1 of these besides the main loop). It talks
/// to the main loop only through call_soon_threadsafe(), and the main loop to it likewise.
struct WorkerLoop {
  std::thread thread;
  Future<void> ready;  // main loop's side: its listener is open (or its error)
  Future<void> done;   // main loop's side: its loop has closed
  EventLoop* loop = nullptr;  // written by the worker before it reports ready
  Event* stop = nullptr;
};

template <class L>
Coro<void> worker_main(LoopState<L>& state, std::uint16_t port, WorkerLoop& worker,
                       EventLoop& main_loop) {
  Coro<L> opening = open_listener<L>(state, port, true);
  L listener = co_await opening;
  Event stop;
  worker.loop = &get_running_loop();
  worker.stop = &stop;
  main_loop.call_soon_threadsafe([&worker] { worker.ready.set_result(); });
  co_await stop.wait();
  co_await listener.shut_down();
}

template <class L>
void worker_thread(std::optional<LoopKind> kind, std::uint16_t port, WorkerLoop& worker,
                   EventLoop& main_loop) {
  std::exception_ptr error;
  {
    LoopState<L> state;  // outlives the loop
    try {
      RunOptions run_options;
      run_options.loop = kind;
      run_options.handle_sigint = false;  // signals are the main loop's
      run(worker_main<L>(state, port, worker, main_loop), run_options);
    } catch (...) {
      error = std::current_exception();
    }
  }
  main_loop.call_soon_threadsafe([&worker, error] {
    if (!worker.ready.done()) {
      worker.ready.set_exception(error ? error : std::make_exception_ptr(std::runtime_error(
                                                     "a worker loop ended before it was ready")));
    }
    worker.done.set_result();
  });
}

template <class L>
Coro<int> main_task(LoopState<L>& state, const char* program, unsigned threads,
                    std::optional<LoopKind> kind) {
  EventLoop& loop = get_running_loop();
  Event stop;
  std::vector<std::unique_ptr<WorkerLoop>> workers;
  // SIGUSR1 and SIGUSR2: each loop reports on its own thread, the workers once they are ready
  // (until the shutdown begins, when the handlers go).
  auto on_report = [&workers](bool tasks) {
    auto report = [tasks](std::size_t index) {
      EventLoop& l = get_running_loop();
      if (tasks) {
        dump_tasks(l);
        return;
      }
      std::string text = "Strata: metrics of loop " + std::to_string(index) + " (" +
                         std::string(l.backend_name()) + ")\n" + l.metrics().format();
      std::fwrite(text.data(), 1, text.size(), stderr);
    };
    report(0);
    for (std::size_t i = 0; i < workers.size(); ++i) {
      WorkerLoop& w = *workers[i];
      if (w.ready.valid() && w.ready.done() && w.stop != nullptr) {
        w.loop->call_soon_threadsafe([report, i] { report(i + 1); });
      }
    }
  };
  const int signals[] = {SIGINT, SIGTERM, SIGUSR1, SIGUSR2};
  auto remove_handlers = [&loop, &signals] {
    for (int sig : signals) loop.remove_signal_handler(sig);
  };
  // The first SIGINT or SIGTERM starts the graceful shutdown and restores the default
  // dispositions, so that a second one ends the process at once.
  auto on_signal = [&stop, &remove_handlers] {
    stop.set();
    remove_handlers();
  };
  loop.add_signal_handler(SIGINT, on_signal);
  loop.add_signal_handler(SIGTERM, on_signal);
  loop.add_signal_handler(SIGUSR1, [&on_report] { on_report(true); });
  loop.add_signal_handler(SIGUSR2, [&on_report] { on_report(false); });
  struct RemoveHandlers {  // they refer to this frame
    decltype(remove_handlers)& remove;
    ~RemoveHandlers() { remove(); }
  } remove_handlers_at_exit{remove_handlers};

  std::string error;
  std::optional<L> listener;
  try {
    Coro<L> opening = open_first_listener<L>(state, threads > 1);
    listener.emplace(co_await opening);
  } catch (...) {
    error = describe_error(std::current_exception());
  }
  if (!error.empty()) {
    std::fprintf(stderr, "%s: %s\n", program, error.c_str());
    co_return 1;
  }
  const std::uint16_t port = listener->port();

  // The other loops bind the same port number, now known, with SO_REUSEPORT.
  for (unsigned i = 1; i < threads; ++i) {
    auto worker = std::make_unique<WorkerLoop>();
    worker->ready = loop.create_future<void>();
    worker->done = loop.create_future<void>();
    worker->thread = std::thread(worker_thread<L>, kind, port, std::ref(*worker), std::ref(loop));
    workers.push_back(std::move(worker));
  }
  for (auto& worker : workers) {
    try {
      co_await worker->ready;
    } catch (...) {
      if (error.empty()) error = describe_error(std::current_exception());
    }
  }

  if (error.empty()) {
    std::printf("listening on %s:%u\n", listener->host().c_str(), static_cast<unsigned>(port));
    std::fflush(stdout);
    co_await stop.wait();
  }

  for (auto& worker : workers) {
    if (worker->stop == nullptr) continue;  // it failed, or never started
    Event* worker_stop = worker->stop;
    worker->loop->call_soon_threadsafe([worker_stop] { worker_stop->set(); });
  }
  co_await listener->shut_down();
  for (auto& worker : workers) {
    co_await worker->done;
    worker->thread.join();  // it has posted its last callback: nothing left but to return
    worker->ready = {};
    worker->done = {};
  }
  if (!error.empty()) {
    std::fprintf(stderr, "%s: %s\n", program, error.c_str());
    co_return 1;
  }
  co_return 0;
}

}  // namespace detail

/// Raises the soft limit on open files to the hard limit, as nginx (worker_rlimit_nofile) and
/// Go's runtime do: the soft limit is 1,024 by default, which would cap a server at about a
/// thousand connections whatever the hard limit allows. Not with the select backend: it cannot
/// watch descriptors past FD_SETSIZE (1,024), and at the limit accept() fails with EMFILE,
/// which the server paces, rather than the selector refusing a descriptor already accepted.
inline void raise_open_file_limit(std::optional<LoopKind> kind) noexcept {
  if (kind == LoopKind::select) return;
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &limit);  // best effort: the old limit stays on failure
  }
}

/// Runs the server whose listener is L on @p threads loops of kind @p kind (the best selector
/// backend when empty), following the example-server contract; returns the exit status.
template <class L>
int run_server(const char* program, unsigned threads, std::optional<LoopKind> kind) {
  raise_open_file_limit(kind);
  RunOptions run_options;
  run_options.loop = kind;
  run_options.handle_sigint = false;  // main_task handles SIGINT and SIGTERM itself
  detail::LoopState<L> state;  // outlives the main loop
  try {
    return run(detail::main_task<L>(state, program, threads, kind), run_options);
  } catch (...) {
    std::fprintf(stderr, "%s: %s\n", program, describe_error(std::current_exception()).c_str());
    return 1;
  }
}

}  // namespace strata::examples
