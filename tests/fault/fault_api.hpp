#pragma once
// The tests' view of the fault plan: the functions of fault_plan.h, looked up in the process
// with dlsym(RTLD_DEFAULT) (the shim is LD_PRELOADed by CTest, never linked), and a FaultPlan
// guard that fails the test clearly when the shim is absent and resets the plan around a test.

#include <dlfcn.h>

#include <catch2/catch.hpp>

#include "fault_plan.h"

namespace strata::fault {

/// The shim's entry points, or nulls when it is not loaded.
struct Api {
  decltype(&::strata_fault_add_errno) add_errno = nullptr;
  decltype(&::strata_fault_add_async_connect_error) add_async_connect_error = nullptr;
  decltype(&::strata_fault_add_short) add_short = nullptr;
  decltype(&::strata_fault_fired) fired = nullptr;
  decltype(&::strata_fault_seen) seen = nullptr;
  decltype(&::strata_fault_injected) injected = nullptr;
  decltype(&::strata_fault_calls) calls = nullptr;
  decltype(&::strata_fault_reset) reset = nullptr;
  decltype(&::strata_fault_loaded) loaded = nullptr;

  bool complete() const noexcept {
    return add_errno && add_async_connect_error && add_short && fired && seen && injected &&
           calls && reset && loaded && loaded() == 1;
  }
};

template <class F>
F lookup(const char* name) {
  return reinterpret_cast<F>(::dlsym(RTLD_DEFAULT, name));
}

inline const Api& api() {
  static const Api a = [] {
    Api x;
    x.add_errno = lookup<decltype(x.add_errno)>("strata_fault_add_errno");
    x.add_async_connect_error =
        lookup<decltype(x.add_async_connect_error)>("strata_fault_add_async_connect_error");
    x.add_short = lookup<decltype(x.add_short)>("strata_fault_add_short");
    x.fired = lookup<decltype(x.fired)>("strata_fault_fired");
    x.seen = lookup<decltype(x.seen)>("strata_fault_seen");
    x.injected = lookup<decltype(x.injected)>("strata_fault_injected");
    x.calls = lookup<decltype(x.calls)>("strata_fault_calls");
    x.reset = lookup<decltype(x.reset)>("strata_fault_reset");
    x.loaded = lookup<decltype(x.loaded)>("strata_fault_loaded");
    return x;
  }();
  return a;
}

/// One test's fault plan: requires the shim (a clear failure otherwise), starts from an empty
/// plan and leaves an empty one. Rule adders REQUIRE that the shim took the rule.
class FaultPlan {
 public:
  FaultPlan() {
    if (!api().complete()) {
      FAIL("libstrata_fault.so is not preloaded: run these tests through ctest "
           "(which sets LD_PRELOAD), or LD_PRELOAD=<build>/tests/libstrata_fault.so");
    }
    api().reset();
  }
  ~FaultPlan() { api().reset(); }
  FaultPlan(const FaultPlan&) = delete;
  FaultPlan& operator=(const FaultPlan&) = delete;

  int fail(int op, int fd, int skip, int times, int err) {
    const int id = api().add_errno(op, fd, skip, times, err);
    REQUIRE(id >= 0);
    return id;
  }
  int fail_connect_async(int skip, int times, int err) {
    const int id = api().add_async_connect_error(-1, skip, times, err);
    REQUIRE(id >= 0);
    return id;
  }
  int shorten(int op, int fd, int skip, int times, long max_bytes) {
    const int id = api().add_short(op, fd, skip, times, max_bytes);
    REQUIRE(id >= 0);
    return id;
  }
  long fired(int id) const { return api().fired(id); }
  long seen(int id) const { return api().seen(id); }
  long injected(int op) const { return api().injected(op); }
  long calls(int op) const { return api().calls(op); }
};

}  // namespace strata::fault
