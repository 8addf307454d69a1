#include "strata/core/diagnostics.hpp"

#include <cstdio>
#include <set>
#include <string_view>

#include "strata/core/event_loop.hpp"
#include "strata/core/task.hpp"
#include "task_registry.hpp"

namespace strata {

namespace {

using detail::AwaitFrame;
using detail::TaskCore;

std::vector<AwaitFrameInfo> chain_of(const TaskCore& task) {
  std::vector<AwaitFrameInfo> chain;
  for (const AwaitFrame* f = task.root_frame(); f != nullptr && f->site; f = f->child) {
    chain.push_back({f->site.function, f->site.file, f->site.line,
                     f->awaiting != nullptr ? f->awaiting() : ""});
  }
  return chain;
}

TaskInfo info_of(TaskCore& task, std::set<const TaskCore*>& shown) {
  shown.insert(&task);
  TaskInfo info;
  info.name = task.name();
  EventLoop& loop = task.future().loop();
  if (&task == TaskCore::current()) {
    info.state = TaskInfo::State::running;
    return info;  // its frames describe earlier co_awaits: nothing to show
  }
  if (!task.started()) return info;
  info.state = task.suspended() ? TaskInfo::State::suspended : TaskInfo::State::scheduled;
  info.suspended_for = loop.iteration_time() - task.suspended_since();
  info.chain = chain_of(task);
  if (detail::FutureStateBase* f = task.waiting_on()) {
    info.waiting_on = f->describe();
    TaskCore* awaited = f->as_task();
    if (awaited != nullptr && !awaited->future().done() && shown.count(awaited) == 0) {
      info.awaited_tasks.push_back(info_of(*awaited, shown));
    }
  }
  return info;
}

std::string_view base_name(std::string_view path) {
  auto slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::string seconds_text(Duration d) {
  char text[32];
  std::snprintf(text, sizeof text, "%.3f s", std::chrono::duration<double>(d).count());
  return text;
}

void append_chain(std::string& out, const std::vector<AwaitFrameInfo>& chain,
                  const std::string& waiting_on, const std::string& indent) {
  for (std::size_t i = 0; i < chain.size(); ++i) {
    const AwaitFrameInfo& f = chain[i];
    out += indent + f.function + " at " + std::string(base_name(f.file)) + ":" +
           std::to_string(f.line);
    if (i + 1 == chain.size()) {
      out += " awaiting " + (waiting_on.empty() || waiting_on == "Future" ? f.awaiting
                                                                          : waiting_on);
    }
    out += '\n';
  }
}

void append_task(std::string& out, const TaskInfo& task, const std::string& indent) {
  out += indent + "Task '" + task.name + "' (" + to_string(task.state);
  if (task.state == TaskInfo::State::suspended || task.state == TaskInfo::State::scheduled) {
    out += " for " + seconds_text(task.suspended_for);
  }
  out += ")\n";
  append_chain(out, task.chain, task.waiting_on, indent + "    ");
  for (const TaskInfo& awaited : task.awaited_tasks) append_task(out, awaited, indent + "  ");
}

}  // namespace

const char* to_string(TaskInfo::State state) noexcept {
  switch (state) {
    case TaskInfo::State::not_started: return "not started";
    case TaskInfo::State::scheduled: return "scheduled";
    case TaskInfo::State::running: return "running";
    case TaskInfo::State::suspended: return "suspended";
  }
  return "unknown";
}

std::vector<TaskInfo> task_tree(EventLoop& loop) {
  // The tasks that another pending task awaits are shown under it, not at the top.
  std::set<const TaskCore*> awaited;
  for (TaskCore* t = TaskCore::first(loop); t != nullptr; t = t->next_live()) {
    if (t->future().done() || t == TaskCore::current()) continue;
    if (detail::FutureStateBase* f = t->waiting_on()) {
      if (TaskCore* a = f->as_task()) awaited.insert(a);
    }
  }
  // The live list holds the newest task first; show the oldest first.
  std::vector<TaskCore*> pending;
  for (TaskCore* t = TaskCore::first(loop); t != nullptr; t = t->next_live()) {
    if (!t->future().done()) pending.push_back(t);
  }
  std::vector<TaskInfo> roots;
  std::set<const TaskCore*> shown;
  for (auto it = pending.rbegin(); it != pending.rend(); ++it) {
    if (awaited.count(*it) == 0) roots.push_back(info_of(**it, shown));
  }
  // What is left awaits in a cycle (a deadlock): show it too, from any member.
  for (auto it = pending.rbegin(); it != pending.rend(); ++it) {
    if (shown.count(*it) == 0) roots.push_back(info_of(**it, shown));
  }
  return roots;
}

std::string format_tasks(EventLoop& loop) {
  std::string out;
  for (const TaskInfo& task : task_tree(loop)) append_task(out, task, "");
  return out;
}

void dump_tasks(EventLoop& loop) {
  std::size_t pending = 0;
  for (TaskCore* t = TaskCore::first(loop); t != nullptr; t = t->next_live()) {
    if (!t->future().done()) ++pending;
  }
  std::string text = "Strata: " + std::to_string(pending) + " pending task" +
                     (pending == 1 ? "" : "s") + " on the " + std::string(loop.backend_name()) +
                     " loop\n" + format_tasks(loop);
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

namespace detail {

std::string format_await_chain(TaskCore& task, const std::string& indent) {
  std::string out;
  std::string waiting_on = task.waiting_on() != nullptr ? task.waiting_on()->describe() : "";
  append_chain(out, chain_of(task), waiting_on, indent);
  return out;
}

std::string format_await_site(const AwaitSite& site) {
  if (!site) return {};
  return std::string(site.function) + " at " + std::string(base_name(site.file)) + ":" +
         std::to_string(site.line);
}

}  // namespace detail

}  // namespace strata
