// job_spec.hpp: the job kinds a task_worker runs, as a submitter writes them (README.md,
// "Jobs"). The coordinator checks a job with parse_job() when it is submitted, so that a bad
// one fails at once instead of on a worker; the worker parses it again to run it.
//
//   sleep MS      waits MS milliseconds (0 to 86400000) on the worker's loop
//   fib N         the N-th Fibonacci number (N from 0 to 93), by the naive recursion: CPU
//                 work, run on the worker's executor, never on its loop thread
//   sha256 TEXT   the SHA-256 of TEXT (the bytes after "sha256 "), in hex
//   run CMD       runs CMD with /bin/sh -c; returns its exit status and its stdout
#pragma once

#include "wire.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace task_executor {

enum class JobKind { sleep, fib, sha256, run };

struct JobSpec {
  JobKind kind = JobKind::sleep;
  std::uint64_t number = 0;  // sleep's milliseconds, fib's N
  std::string text;          // sha256's text, run's command
};

/// The largest N of `fib N`: fib(93) is the last that fits in 64 bits.
constexpr std::uint64_t max_fib = 93;
/// The longest `sleep MS`: a day.
constexpr std::uint64_t max_sleep_ms = 86'400'000;

/// Parses a job (already unescaped). On failure returns std::nullopt and says why in @p error.
inline std::optional<JobSpec> parse_job(std::string_view spec, std::string& error) {
  const std::size_t space = spec.find(' ');
  const std::string_view kind = spec.substr(0, space);
  const std::string_view arg =
      space == std::string_view::npos ? std::string_view() : spec.substr(space + 1);
  JobSpec job;
  if (kind == "sleep" || kind == "fib") {
    const bool is_sleep = kind == "sleep";
    const std::uint64_t max = is_sleep ? max_sleep_ms : max_fib;
    const std::optional<std::uint64_t> n = parse_u64(arg, 0, max);
    if (!n) {
      error = std::string(kind) + " needs a whole number from 0 to " + std::to_string(max);
      return std::nullopt;
    }
    job.kind = is_sleep ? JobKind::sleep : JobKind::fib;
    job.number = *n;
    return job;
  }
  if (kind == "sha256") {
    job.kind = JobKind::sha256;
    job.text = std::string(arg);
    return job;
  }
  if (kind == "run") {
    if (arg.find_first_not_of(" \t") == std::string_view::npos) {
      error = "run needs a command";
      return std::nullopt;
    }
    job.kind = JobKind::run;
    job.text = std::string(arg);
    return job;
  }
  error = "unknown job kind '" + std::string(kind.substr(0, max_token)) +
          "' (sleep MS, fib N, sha256 TEXT or run CMD)";
  return std::nullopt;
}

}  // namespace task_executor
