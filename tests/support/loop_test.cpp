#include "loop_test.hpp"

#include <strata/core/errors.hpp>

namespace strata::testing {

TestLoop::TestLoop(LoopKind kind) : loop_(new_event_loop(kind)) {
  loop_->set_exception_handler(
      [this](EventLoop&, const ExceptionContext& context) { errors_.push_back(context); });
}

TestLoop::~TestLoop() {
  std::vector<std::string> pending;
  for (TaskRef& t : all_tasks(*loop_)) pending.push_back(t.get_name());
  if (!loop_->is_running()) loop_->close();
  if (!pending.empty()) {
    std::string names;
    for (auto& n : pending) names += " " + n;
    FAIL_CHECK("tasks left pending at teardown:" << names);
  }
}

void TestLoop::arm_deadline(Duration deadline) {
  deadline_ = loop_->call_later(deadline, [this] {
    std::string names;
    for (TaskRef& t : all_tasks(*loop_)) names += " " + t.get_name();
    FAIL_CHECK("test deadline passed; pending tasks:" << names);
    for (TaskRef& t : all_tasks(*loop_)) t.cancel("test deadline");
  });
}

void TestLoop::disarm_deadline() { deadline_.cancel(); }

}  // namespace strata::testing
