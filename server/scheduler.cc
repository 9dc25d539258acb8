#include "server/scheduler.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace llmc::server {

ScheduleResult Schedule(std::vector<QueuedJob> jobs, std::vector<IdleWorker> idle, int live_workers) {
  std::stable_sort(jobs.begin(), jobs.end(), [](const QueuedJob& a, const QueuedJob& b) {
    if (a.priority != b.priority) return a.priority > b.priority;
    return a.queue_seq < b.queue_seq;
  });
  std::stable_sort(idle.begin(), idle.end(),
                   [](const IdleWorker& a, const IdleWorker& b) { return a.idle_since_ms < b.idle_since_ms; });
  ScheduleResult r;
  size_t next_idle = 0;
  bool blocked = false;
  std::string blocker;
  for (const QueuedJob& j : jobs) {
    int want = std::max(1, j.gpus);
    // Fewer ranks if that is all there is and the job allows it.
    if (want > live_workers && j.min_gpus > 0 && j.min_gpus <= live_workers) want = live_workers;
    if (want > live_workers) {
      r.waiting.push_back({j.id, absl::StrCat("needs ", want, " worker", want == 1 ? "" : "s", "; ", live_workers,
                                              " registered: start more llmc-worker processes or lower gpus")});
      continue;
    }
    const size_t free = idle.size() - next_idle;
    if (blocked || static_cast<size_t>(want) > free || j.stopping > 0) {
      if (!blocked) {
        blocked = true;
        blocker = j.id;
        if (j.stopping > 0)
          r.waiting.push_back({j.id, absl::StrCat("waiting for ", j.stopping, " worker", j.stopping == 1 ? "" : "s",
                                                  " of the previous attempt to stop")});
        else
          r.waiting.push_back({j.id, absl::StrCat("waiting for ", want, " idle worker", want == 1 ? "" : "s", " (",
                                                  free, " idle now)")});
      } else {
        r.waiting.push_back({j.id, absl::StrCat("queued behind job ", blocker)});
      }
      continue;
    }
    Placement p;
    p.job_id = j.id;
    for (int k = 0; k < want; ++k) p.worker_ids.push_back(idle[next_idle++].id);
    r.placements.push_back(std::move(p));
  }
  return r;
}

}  // namespace llmc::server
