// Which queued jobs start now and on which workers: priorities first (higher first), FIFO (queue order)
// within a priority, and gang allocation (a job asking for G workers starts only when G are idle at once; it
// gets G of them with ranks 0..G-1).
//
// Head-of-line rule: when the first job in order that could ever run (G <= live workers) does not fit in the
// idle workers now, nothing behind it starts either, so a large job is not starved by a stream of small
// ones. A job asking for more workers than are registered (and not LOST) is skipped with a reason and stays
// queued, unless it allows fewer (min_gpus): then it takes every live worker (at least min_gpus) once they are
// idle, so a job whose worker was lost goes on with the workers that remain. A job whose previous attempt's workers have not all stopped yet waits the same way as one that does not
// fit.
//
// Pure function of its inputs: no clock, no I/O; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace llmc::server {

struct QueuedJob {
  std::string id;
  int priority = 0;
  int64_t queue_seq = 0;  // creation order
  int gpus = 1;           // workers wanted (<= 0 means 1)
  // Workers still running an earlier attempt of this job (told to stop, not yet stopped). The job waits for them,
  // as a job that does not fit waits (blocking the jobs behind it), so two attempts never run at once.
  int stopping = 0;
  // The fewest workers it may run on when fewer than `gpus` are live (0: gpus, no shrinking).
  int min_gpus = 0;
};

struct IdleWorker {
  std::string id;
  int64_t idle_since_ms = 0;  // workers idle longest are used first
};

struct Placement {
  std::string job_id;
  std::vector<std::string> worker_ids;  // index = rank
};

struct Waiting {
  std::string job_id;
  std::string reason;  // for the job's event: why it does not start
};

struct ScheduleResult {
  std::vector<Placement> placements;
  std::vector<Waiting> waiting;
};

// `live_workers`: workers registered and not LOST (idle or busy).
ScheduleResult Schedule(std::vector<QueuedJob> jobs, std::vector<IdleWorker> idle, int live_workers);

}  // namespace llmc::server
