#include "server/coordinator.h"

#include <openssl/rand.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "engine/format/job_recipe.h"
#include "server/scheduler.h"
#include "proto/channel.h"
#include "proto/spec_convert.h"
#include "storage/path_confinement.h"
#include "storage/storage_uri.h"
#include "common/util.h"

namespace llmc::server {

using rpc::IsTerminal;
using rpc::StateName;
using rpc::ToEngineSpec;

namespace fs = std::filesystem;

namespace {

std::string NewJobId() {
  unsigned char b[8];
  RAND_bytes(b, sizeof(b));
  static const char* kHex = "0123456789abcdef";
  std::string s = "job-";
  for (unsigned char c : b) {
    s += kHex[c >> 4];
    s += kHex[c & 15];
  }
  return s;
}

v1::JobEvent StateEvent(v1::JobState state, const std::string& message) {
  v1::JobEvent e;
  e.set_type("state");
  e.set_state(state);
  e.set_message(message);
  e.set_time_ms(NowMs());
  return e;
}

v1::JobEvent LogEvent(v1::JobState state, const std::string& message) {
  v1::JobEvent e = StateEvent(state, message);
  e.set_type("log");
  return e;
}

// The job's progress with `fraction` filled in.
v1::Progress WithFraction(v1::Progress p) {
  if (p.blocks_total() > 0) p.set_fraction(static_cast<double>(p.blocks_done()) / p.blocks_total());
  else if (p.bytes_total() > 0) p.set_fraction(static_cast<double>(p.bytes_done()) / p.bytes_total());
  return p;
}

std::string LocalPathOf(const std::string& uri) {
  auto u = storage::ParseStorageUri(uri);
  return u.ok() && u->is_file() ? u->path : std::string();
}

}  // namespace

MethodLabels MethodLabelsOf(const v1::JobSpec& spec) {
  if (!spec.has_preset()) return {"recipe", "recipe"};
  std::string algorithm = absl::AsciiStrToLower(spec.preset().algorithm());
  return {algorithm.empty() ? "rtn" : algorithm, absl::AsciiStrToUpper(spec.preset().scheme())};
}

std::string StagingDirFor(const v1::Job& job) {
  std::string out = LocalPathOf(job.spec().output_uri());
  if (out.empty()) return "";
  fs::path p(out);
  return (p.parent_path() / absl::StrCat(".", p.filename().string(), ".llmc-staging-", job.id())).string();
}

Coordinator::Coordinator(CoordinatorOptions options, JobStore* store, ServiceMetrics* metrics)
    : options_(std::move(options)), store_(store), metrics_(metrics) {
  metrics_->registry->AddCollector([this] { Collect(); });
}

Coordinator::~Coordinator() { Stop(); }

absl::Status Coordinator::Start() {
  absl::MutexLock l(&mu_);
  LLMC_ASSIGN_OR_RETURN(auto workers, store_->Workers());
  for (auto& w : workers) {
    if (w.state() == "LOST") continue;
    w.set_state("LOST");
    w.clear_job_id();
    LLMC_RETURN_IF_ERROR(store_->PutWorker(w));
  }
  // Staging directories of jobs that ended while some rank still ran, before a restart (or a crash): removed once
  // the workers of that time had a lease to notice the coordinator went away and stop (Loop).
  LLMC_ASSIGN_OR_RETURN(auto ended, store_->StagingToRemove());
  for (auto& job : ended) {
    const std::string id = job.id();
    cleanup_[id] = PendingCleanup{std::move(job), NowMs() + options_.lease_ms};
  }
  LLMC_ASSIGN_OR_RETURN(auto jobs, store_->ActiveJobs());
  for (auto& [seq, job] : jobs) {
    if (job.state() == v1::RUNNING) {
      std::string msg = absl::StrCat("coordinator restarted during attempt ", job.attempts(),
                                     "; re-queued to resume at block ", job.finished_blocks());
      job.clear_worker_ids();
      LLMC_RETURN_IF_ERROR(SetStateLocked(&job, v1::RETRYING, msg));
      metrics_->job_retries->Inc();
      spdlog::info("job {}: {}", job.id(), msg);
    }
    ActiveJob a;
    a.job = std::move(job);
    a.queue_seq = seq;
    std::string id = a.job.id();
    active_[id] = std::move(a);
  }
  loop_ = std::thread([this] { Loop(); });
  return absl::OkStatus();
}

void Coordinator::Stop() {
  {
    absl::MutexLock l(&mu_);
    if (stop_) return;
    stop_ = true;
    for (auto& [id, f] : feeds_) {
      absl::MutexLock fl(&f->mu);
      f->stopped = true;
      f->cv.SignalAll();
    }
    for (auto& [id, w] : workers_)
      if (w.link.close) w.link.close();
    absl::MutexLock cl(&changes_mu_);
    changes_stopped_ = true;
    changes_cv_.SignalAll();
  }
  loop_cv_.SignalAll();
  if (loop_.joinable()) loop_.join();
}

int64_t Coordinator::LastJobChange() {
  absl::MutexLock l(&changes_mu_);
  return change_seq_;
}

Coordinator::JobChanges Coordinator::WaitJobChanges(int64_t after, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::MutexLock l(&changes_mu_);
  while (!changes_stopped_ && change_seq_ <= after && !changes_cv_.WaitWithDeadline(&changes_mu_, deadline)) {
  }
  JobChanges out;
  out.seq = change_seq_;
  out.stopped = changes_stopped_;
  // A client that saw a change number of an earlier server (restarted: numbers start again) reloads too.
  out.missed = after > change_seq_ || (!changes_.empty() && changes_.front().first > after + 1);
  if (out.missed) return out;
  std::set<std::string> seen;
  for (auto it = changes_.rbegin(); it != changes_.rend() && it->first > after; ++it)
    if (seen.insert(it->second).second) out.job_ids.push_back(it->second);
  std::reverse(out.job_ids.begin(), out.job_ids.end());
  return out;
}

void Coordinator::Loop() {
  absl::MutexLock l(&mu_);
  while (!stop_) {
    // Wake for a kick or every 250 ms (leases expire without one).
    const absl::Time deadline = absl::Now() + absl::Milliseconds(250);
    while (!stop_ && !kick_ && !loop_cv_.WaitWithDeadline(&mu_, deadline)) {
    }
    if (stop_) break;
    kick_ = false;
    const int64_t now = NowMs();
    for (auto& [id, w] : workers_) {
      if (w.info.state() != "LOST" && w.lease_deadline_ms < now) {
        WorkerLostLocked(&w, absl::StrCat("no heartbeat for ", options_.lease_ms, " ms"));
        if (w.link.close) w.link.close();
      }
    }
    // Forget workers lost more than 10 minutes ago (their streams are gone).
    for (auto it = workers_.begin(); it != workers_.end();) {
      const auto& i = it->second;
      if (i.info.state() == "LOST" && !i.link.send && now - i.info.last_heartbeat_ms() > 600'000) it = workers_.erase(it);
      else ++it;
    }
    for (auto it = cleanup_.begin(); it != cleanup_.end();) {
      if (it->second.not_before_ms <= now && RanksRunningLocked(it->first) == 0) {
        RemoveStagingNowLocked(it->second.job);
        it = cleanup_.erase(it);
      } else {
        ++it;
      }
    }
    ScheduleLocked();
  }
}

absl::Status Coordinator::CommitLocked(v1::Job* job, std::vector<v1::JobEvent> events) {
  for (auto& e : events)
    if (e.time_ms() == 0) e.set_time_ms(NowMs());
  absl::Status s = store_->UpdateJob(job, &events);
  if (!s.ok()) {
    spdlog::error("job {}: cannot write to the job store: {}", job->id(), s.ToString());
    return absl::UnavailableError(absl::StrCat("the job store is unavailable: ", s.message()));
  }
  auto f = feeds_.find(job->id());
  if (f != feeds_.end()) {
    absl::MutexLock fl(&f->second->mu);
    f->second->last_seq = job->last_event_seq();
    f->second->terminal = IsTerminal(job->state());
    f->second->cv.SignalAll();
  }
  {
    absl::MutexLock cl(&changes_mu_);
    changes_.emplace_back(++change_seq_, job->id());
    if (changes_.size() > kMaxKeptChanges) changes_.pop_front();
    changes_cv_.SignalAll();
  }
  auto a = active_.find(job->id());
  if (IsTerminal(job->state())) {
    if (a != active_.end()) active_.erase(a);
  } else if (a != active_.end() && &a->second.job != job) {
    a->second.job = *job;
  }
  return absl::OkStatus();
}

absl::Status Coordinator::SetStateLocked(v1::Job* job, v1::JobState state, const std::string& message,
                                         const char* failure_reason) {
  v1::Job next = *job;
  next.set_state(state);
  next.set_message(message);
  const int64_t now = NowMs();
  const bool first_start = state == v1::RUNNING && next.start_time_ms() == 0;
  if (first_start) next.set_start_time_ms(now);
  if (IsTerminal(state)) next.set_end_time_ms(now);
  if (state == v1::SUCCEEDED) {
    v1::Progress p = next.progress();
    p.set_fraction(1);
    *next.mutable_progress() = p;
  }
  std::vector<v1::JobEvent> ev{StateEvent(state, message)};
  *ev[0].mutable_progress() = next.progress();
  const bool was_final = IsTerminal(job->state());
  // CommitLocked may erase the active entry `job` points into: work on a copy, then copy back.
  LLMC_RETURN_IF_ERROR(CommitLocked(&next, std::move(ev)));
  if (first_start && next.create_time_ms() > 0) {
    const MethodLabels m = MethodLabelsOf(next.spec());
    metrics_->queue_wait->Observe({m.algorithm, m.scheme}, std::max<int64_t>(0, now - next.create_time_ms()) / 1000.0);
  }
  if (IsTerminal(state) && !was_final) OnFinalLocked(next, failure_reason);
  *job = next;  // callers pass a copy, never an entry of active_ (CommitLocked may erase it)
  return absl::OkStatus();
}

void Coordinator::OnFinalLocked(const v1::Job& job, const char* failure_reason) {
  const char* st = StateName(job.state());
  metrics_->jobs_finished->Inc({st});
  if (job.state() == v1::FAILED)
    metrics_->job_failures->Inc({failure_reason                ? std::string(failure_reason)
                                 : !job.error_code().empty() ? job.error_code()
                                                             : std::string("UNKNOWN")});
  if (job.start_time_ms() > 0) {
    const MethodLabels m = MethodLabelsOf(job.spec());
    metrics_->job_duration->Observe({st, m.algorithm, m.scheme}, (job.end_time_ms() - job.start_time_ms()) / 1000.0);
  }
  spdlog::info("job {}: {} {}", job.id(), st, job.message());
}

absl::StatusOr<Coordinator::Checked> Coordinator::CheckSpec(const std::string& tenant, const v1::JobSpec& spec,
                                                             bool for_create) {
  LLMC_ASSIGN_OR_RETURN(const AccessPolicy pol, options_.policy.ForTenant(tenant));
  LLMC_RETURN_IF_ERROR(CheckSpecLimits(spec, options_.limits));
  LLMC_ASSIGN_OR_RETURN(storage::StorageUri model, pol.CheckInput("spec.model_uri", spec.model_uri()));
  LLMC_ASSIGN_OR_RETURN(storage::StorageUri output, pol.CheckOutput("spec.output_uri", spec.output_uri()));
  std::string dataset;
  if (!spec.calibration().dataset_uri().empty()) {
    LLMC_ASSIGN_OR_RETURN(storage::StorageUri d, pol.CheckInput("spec.calibration.dataset_uri", spec.calibration().dataset_uri()));
    dataset = d.is_file() ? d.path : d.ToString();
    std::error_code ec;  // the overloads without it throw, e.g. on a path component over NAME_MAX
    if (d.is_file() && options_.check_local_paths && !fs::is_regular_file(dataset, ec))
      return absl::InvalidArgumentError(absl::StrCat("spec.calibration.dataset_uri: ", Truncated(dataset),
                                                     " is not a readable file; give a text or JSONL file"));
  }
  if (!spec.eval_text_uri().empty()) {
    LLMC_ASSIGN_OR_RETURN(storage::StorageUri t, pol.CheckInput("spec.eval_text_uri", spec.eval_text_uri()));
    std::error_code ec;
    if (t.is_file() && options_.check_local_paths && !fs::is_regular_file(t.path, ec))
      return absl::InvalidArgumentError(absl::StrCat("spec.eval_text_uri: ", Truncated(t.path), " is not a readable file"));
  }
  if (spec.gpus() < 0 || spec.gpus() > 1024)
    return absl::InvalidArgumentError(absl::StrCat("spec.gpus ", spec.gpus(), ": give 1 to 1024 (0 means 1)"));
  if (spec.min_gpus() < 0 || spec.min_gpus() > std::max(1, spec.gpus()))
    return absl::InvalidArgumentError(absl::StrCat("spec.min_gpus ", spec.min_gpus(), ": give 1 to gpus (",
                                                   std::max(1, spec.gpus()), "), or 0 for no fewer than gpus"));
  if (!spec.observer().empty() && spec.observer() != "mse" && spec.observer() != "minmax" &&
      spec.observer() != "imatrix_mse")
    return absl::InvalidArgumentError(
        absl::StrCat("spec.observer '", Truncated(spec.observer()), "': use minmax, mse or imatrix_mse"));
  LLMC_ASSIGN_OR_RETURN(llmc::JobSpec e, ToEngineSpec(spec, model.path, output.path, dataset));
  auto recipe = ResolveJobRecipe(e);
  if (!recipe.ok()) {
    std::string field = spec.has_preset() ? "spec.preset" : "spec.recipe_yaml";
    if (absl::StartsWith(recipe.status().message(), field)) return recipe.status();  // it names the field already
    // The calibration options are checked against the recipe; their errors belong to their own fields.
    if (absl::StartsWith(recipe.status().message(), "precision ")) field = "spec.precision";
    if (absl::StartsWith(recipe.status().message(), "calibration activations ")) field = "spec.calibration_activations";
    return absl::Status(recipe.status().code(), absl::StrCat(field, ": ", recipe.status().message()));
  }
  Checked c;
  c.method = recipe->Describe();
  c.needs_calibration = recipe->NeedsCalibration();
  c.recipe_yaml = recipe->yaml;
  if (!c.needs_calibration && !spec.calibration().dataset_uri().empty())
    c.warnings.push_back(absl::StrCat(c.method, " is data-free; spec.calibration is not used"));
  if (spec.gpus() > 1 && !c.needs_calibration)
    c.warnings.push_back(absl::StrCat(c.method, " is data-free: rank 0 of the ", spec.gpus(),
                                      " workers does all of it; use gpus: 1"));
  if (options_.check_local_paths && model.is_file()) {
    std::error_code ec;
    if (!fs::is_regular_file(fs::path(model.path) / "config.json", ec))
      return absl::InvalidArgumentError(absl::StrCat("spec.model_uri: ", Truncated(model.path),
                                                     " is not a readable Hugging Face model directory (no config.json); "
                                                     "give the directory with config.json and *.safetensors"));
  }
  if (for_create && options_.check_local_paths && output.is_file()) {
    std::error_code ec;
    const bool exists = fs::exists(output.path, ec);
    if (ec && ec != std::errc::no_such_file_or_directory)
      return absl::InvalidArgumentError(absl::StrCat("spec.output_uri: ", Quote(output.path), ": ", ec.message(),
                                                     "; choose another output location"));
    if (exists)
      return absl::FailedPreconditionError(absl::StrCat("spec.output_uri: ", Truncated(output.path),
                                                      " exists; jobs never overwrite: choose a new output location"));
  }
  return c;
}

absl::StatusOr<v1::Job> Coordinator::CreateJob(const Principal& p, const v1::CreateJobRequest& req) {
  LLMC_RETURN_IF_ERROR(RequireWrite(p, "create jobs"));
  LLMC_RETURN_IF_ERROR(CheckText("request_id", req.request_id(), kMaxRequestIdBytes));
  if (req.request_id().empty())
    return absl::InvalidArgumentError(absl::StrCat("request_id: required (1-", kMaxRequestIdBytes,
                                                   " bytes), e.g. a UUID; repeating a create with the same "
                                                   "request_id returns the same job"));
  // An idempotent repeat is answered before the checks (the output may exist by now).
  auto prior = store_->FindByRequestId(p.tenant, req.request_id());
  if (prior.ok()) {
    if (prior->second != DeterministicBytes(req.spec()))
      return absl::AlreadyExistsError(absl::StrCat("request_id '", req.request_id(), "' was used for job ",
                                                   prior->first.id(), " with a different spec; use a new request_id "
                                                   "for a new job"));
    absl::MutexLock l(&mu_);
    auto a = active_.find(prior->first.id());
    return a != active_.end() ? a->second.job : prior->first;
  }
  if (!absl::IsNotFound(prior.status())) return absl::UnavailableError(prior.status().message());
  LLMC_ASSIGN_OR_RETURN(Checked checked, CheckSpec(p.tenant, req.spec(), /*for_create=*/true));
  absl::MutexLock l(&mu_);
  if (stop_) return absl::UnavailableError("the coordinator is shutting down; retry");
  const std::string out_path = LocalPathOf(req.spec().output_uri());
  for (const auto& [id, a] : active_)
    if (!out_path.empty() && LocalPathOf(a.job.spec().output_uri()) == out_path) {
      // Another tenant's job is not named (nor is anything else about it).
      if (a.job.tenant() != p.tenant)
        return absl::FailedPreconditionError(absl::StrCat("spec.output_uri: another job is writing ", out_path,
                                                          " already; choose another output location"));
      return absl::FailedPreconditionError(absl::StrCat("spec.output_uri: job ", id, " is writing ", out_path,
                                                        " already; choose another output or cancel that job"));
    }
  LLMC_RETURN_IF_ERROR(CheckQuotasLocked(p.tenant, req.spec()));
  v1::Job job;
  job.set_id(NewJobId());
  job.set_request_id(req.request_id());
  job.set_tenant(p.tenant);
  *job.mutable_spec() = req.spec();
  job.set_state(v1::QUEUED);
  job.set_create_time_ms(NowMs());
  job.set_max_attempts(options_.max_attempts);
  job.set_message(absl::StrCat("queued: ", checked.method));
  auto created = store_->CreateJob(job, StateEvent(v1::QUEUED, job.message()));
  if (!created.ok()) {
    if (absl::IsAlreadyExists(created.status())) return created.status();
    return absl::UnavailableError(absl::StrCat("the job store is unavailable: ", created.status().message()));
  }
  if (!created->created) {
    auto a = active_.find(created->job.id());
    return a != active_.end() ? a->second.job : created->job;
  }
  metrics_->jobs_created->Inc();
  ActiveJob a;
  a.job = created->job;
  a.queue_seq = created->seq;
  active_[a.job.id()] = a;
  spdlog::info("job {}: created by tenant {} ({} -> {}, {})", a.job.id(), p.tenant, req.spec().model_uri(),
               req.spec().output_uri(), checked.method);
  kick_ = true;
  loop_cv_.SignalAll();
  return a.job;
}

absl::StatusOr<v1::Job> Coordinator::LookupLocked(const Principal& p, const std::string& id) {
  LLMC_RETURN_IF_ERROR(RequireRead(p));
  if (id.empty()) return absl::InvalidArgumentError("id: required (a job id such as job-0123abcd...)");
  v1::Job job;
  auto a = active_.find(id);
  if (a != active_.end()) {
    job = a->second.job;
  } else {
    auto j = store_->GetJob(id);
    if (!j.ok()) {
      if (absl::IsNotFound(j.status())) return j.status();
      return absl::UnavailableError(j.status().message());
    }
    job = std::move(*j);
  }
  if (!CanSeeTenant(p, job.tenant()))
    return absl::NotFoundError(absl::StrCat("job '", id, "' not found; list your jobs with `llmc list`"));
  return job;
}

absl::StatusOr<v1::Job> Coordinator::GetJob(const Principal& p, const std::string& id) {
  absl::MutexLock l(&mu_);
  return LookupLocked(p, id);
}

absl::StatusOr<v1::ListJobsResponse> Coordinator::ListJobs(const Principal& p, const v1::ListJobsRequest& req) {
  LLMC_RETURN_IF_ERROR(RequireRead(p));
  if (req.page_size() < 0) return absl::InvalidArgumentError("page_size: must be 0 (default 50) to 1000");
  ListQuery q;
  q.tenant = p.role == Role::kAdmin ? "" : p.tenant;
  q.state = req.state();
  q.labels.insert(req.labels().begin(), req.labels().end());
  q.page_size = req.page_size();
  q.page_token = req.page_token();
  absl::MutexLock l(&mu_);  // store writes and active_ agree under mu_
  return store_->ListJobs(q);
}

absl::StatusOr<v1::Job> Coordinator::CancelJob(const Principal& p, const std::string& id) {
  absl::MutexLock l(&mu_);
  LLMC_ASSIGN_OR_RETURN(v1::Job job, LookupLocked(p, id));
  LLMC_RETURN_IF_ERROR(RequireWrite(p, "cancel jobs"));
  if (IsTerminal(job.state()))
    return absl::FailedPreconditionError(absl::StrCat("job ", id, " is ", StateName(job.state()),
                                                      "; only QUEUED, RUNNING or RETRYING jobs can be cancelled"));
  const bool running = job.state() == v1::RUNNING;
  LLMC_RETURN_IF_ERROR(SetStateLocked(&job, v1::CANCELLED, absl::StrCat("cancelled by tenant ", p.tenant)));
  if (running) ReleaseGangLocked(job, "", /*keep_staging=*/false);  // every rank stops; rank 0 removes the staging
  RemoveStagingWhenStoppedLocked(job);  // and whatever an earlier attempt left, once no rank runs the job
  kick_ = true;
  loop_cv_.SignalAll();
  return job;
}

absl::StatusOr<v1::ValidateJobResponse> Coordinator::ValidateJob(const Principal& p, const v1::JobSpec& spec) {
  LLMC_RETURN_IF_ERROR(RequireRead(p));
  LLMC_ASSIGN_OR_RETURN(Checked c, CheckSpec(p.tenant, spec, /*for_create=*/true));
  if (p.role == Role::kViewer) c.warnings.push_back("this token is a viewer's: it cannot create the job");
  v1::ValidateJobResponse r;
  r.set_method(c.method);
  r.set_needs_calibration(c.needs_calibration);
  for (auto& w : c.warnings) r.add_warnings(w);
  r.set_recipe_yaml(c.recipe_yaml);
  return r;
}

absl::Status Coordinator::WatchJob(const Principal& p, const v1::WatchJobRequest& req,
                                   const std::function<bool(const v1::JobEvent&)>& write,
                                   const std::function<bool()>& cancelled) {
  if (req.from_seq() < 0) return absl::InvalidArgumentError("from_seq: must be >= 0 (the last seq you saw, or 0)");
  std::shared_ptr<Feed> feed;
  {
    absl::MutexLock l(&mu_);
    LLMC_ASSIGN_OR_RETURN(v1::Job job, LookupLocked(p, req.id()));
    auto& f = feeds_[job.id()];
    if (!f) f = std::make_shared<Feed>(job.last_event_seq(), IsTerminal(job.state()), stop_);
    absl::MutexLock fl(&f->mu);
    f->watchers++;
    feed = f;
  }
  auto release = [&] {
    absl::MutexLock l(&mu_);
    absl::MutexLock fl(&feed->mu);
    if (--feed->watchers == 0) feeds_.erase(req.id());
  };
  int64_t seq = req.from_seq();
  absl::Status result = absl::OkStatus();
  while (true) {
    auto events = store_->Events(req.id(), seq);
    if (!events.ok()) {
      result = absl::UnavailableError(events.status().message());
      break;
    }
    bool ended = false;
    for (const auto& e : *events) {
      if (!write(e)) {
        release();
        return absl::CancelledError("the client went away");
      }
      seq = e.seq();
      if (e.type() == "state" && IsTerminal(e.state())) ended = true;
    }
    if (ended) break;
    if (!events->empty()) continue;  // maybe more than one page
    // Sleep until the feed moves past `seq` (no polling of the store); wake twice a second to notice a client
    // that went away.
    absl::MutexLock fl(&feed->mu);
    if (feed->terminal && feed->last_seq <= seq) break;
    bool gone = false;
    while (feed->last_seq <= seq && !feed->terminal && !feed->stopped && !(gone = cancelled()))
      feed->cv.WaitWithTimeout(&feed->mu, absl::Milliseconds(500));
    if (feed->stopped) {
      result = absl::UnavailableError("the coordinator is shutting down; watch again with from_seq");
      break;
    }
    if (gone) {
      result = absl::CancelledError("the client went away");
      break;
    }
  }
  release();
  return result;
}

absl::StatusOr<v1::ListWorkersResponse> Coordinator::ListWorkers(const Principal& p) {
  LLMC_RETURN_IF_ERROR(RequireRead(p));
  absl::MutexLock l(&mu_);
  v1::ListWorkersResponse r;
  for (const auto& [id, w] : workers_) {
    v1::Worker* out = r.add_workers();
    *out = w.info;
    if (w.info.state() != "LOST" && w.device.valid()) {  // a lost worker's last figures are stale
      out->set_memory_used_bytes(w.device.memory_used_bytes());
      out->set_memory_total_bytes(w.device.memory_total_bytes());
    }
    // A worker busy with another tenant's job is shown busy, without the job's id (admins see every id).
    if (p.role != Role::kAdmin && !out->job_id().empty()) {
      auto a = active_.find(out->job_id());
      if (a == active_.end() || a->second.job.tenant() != p.tenant) {
        out->clear_job_id();
        out->set_rank(0);
      }
    }
  }
  return r;
}

absl::Status Coordinator::CheckQuotasLocked(const std::string& tenant, const v1::JobSpec& spec) {
  const TenantQuotas& q = options_.quotas;
  if (q.max_active_jobs <= 0 && q.max_gpus <= 0 && q.max_spec_bytes <= 0) return absl::OkStatus();
  int64_t jobs = 0, gpus = 0, spec_bytes = 0;
  for (const auto& [id, a] : active_)
    if (a.job.tenant() == tenant) {
      ++jobs;
      gpus += std::max(1, a.job.spec().gpus());
      if (q.max_spec_bytes > 0) spec_bytes += static_cast<int64_t>(DeterministicBytes(a.job.spec()).size());
    }
  const int64_t want = std::max(1, spec.gpus());
  if (q.max_active_jobs > 0 && jobs + 1 > q.max_active_jobs)
    return absl::ResourceExhaustedError(absl::StrCat(
        "tenant quota --tenant-max-active-jobs (", q.max_active_jobs, ") reached: tenant ", tenant, " has ", jobs,
        " jobs queued or running; wait for one to finish, cancel one, or ask the operator to raise the quota"));
  if (q.max_gpus > 0 && gpus + want > q.max_gpus)
    return absl::ResourceExhaustedError(absl::StrCat(
        "tenant quota --tenant-max-gpus (", q.max_gpus, ") reached: tenant ", tenant, " has jobs for ", gpus,
        " GPUs queued or running and this one asks for ", want, "; wait for one to finish or ask for fewer gpus"));
  if (q.max_spec_bytes > 0) {
    const int64_t bytes = static_cast<int64_t>(DeterministicBytes(spec).size());
    if (spec_bytes + bytes > q.max_spec_bytes)
      return absl::ResourceExhaustedError(absl::StrCat(
          "tenant quota --tenant-max-spec-bytes (", q.max_spec_bytes, ") reached: tenant ", tenant,
          "'s jobs queued or running hold ", spec_bytes, " bytes of specs and this one has ", bytes,
          "; wait for one to finish, cancel one, or ask the operator to raise the quota"));
  }
  return absl::OkStatus();
}

void Coordinator::PersistWorkerLocked(const WorkerEntry& w) {
  absl::Status s = store_->PutWorker(w.info);
  if (!s.ok()) spdlog::warn("worker {}: cannot record it in the job store: {}", w.info.id(), s.ToString());
}

int64_t Coordinator::RegisterWorker(const v1::Register& reg, WorkerLink link) {
  absl::MutexLock l(&mu_);
  auto it = workers_.find(reg.worker_id());
  if (it != workers_.end() && it->second.info.state() != "LOST") {
    WorkerLostLocked(&it->second, "it registered again (new connection)");
    if (it->second.link.close) it->second.link.close();
  }
  WorkerEntry& w = workers_[reg.worker_id()];
  w.session = next_session_++;
  w.link = std::move(link);
  w.info.set_id(reg.worker_id());
  w.info.set_host(reg.host());
  w.info.set_device(reg.device());
  w.info.set_gpu_memory_bytes(reg.gpu_memory_bytes());
  w.info.set_state("IDLE");
  w.info.clear_job_id();
  w.info.set_rank(0);
  const int64_t now = NowMs();
  w.info.set_last_heartbeat_ms(now);
  w.lease_deadline_ms = now + options_.lease_ms;
  w.idle_since_ms = now;
  PersistWorkerLocked(w);
  v1::CoordinatorMessage m;
  m.mutable_registered()->set_lease_ms(options_.lease_ms);
  w.link.send(m);
  spdlog::info("worker {} registered ({} on {})", reg.worker_id(), reg.device(), reg.host());
  kick_ = true;
  loop_cv_.SignalAll();
  return w.session;
}

void Coordinator::FreeWorkerLocked(WorkerEntry* w) {
  if (w->info.state() == "LOST") return;
  w->info.set_state("IDLE");
  w->info.clear_job_id();
  w->info.set_rank(0);
  w->idle_since_ms = NowMs();
  PersistWorkerLocked(*w);
  kick_ = true;
  loop_cv_.SignalAll();
}

void Coordinator::ReleaseGangLocked(const v1::Job& job, const std::string& except, bool keep_staging) {
  for (auto& [id, w] : workers_) {
    if (id == except || w.info.job_id() != job.id() || w.info.state() != "BUSY") continue;
    v1::CoordinatorMessage m;
    m.mutable_cancel()->set_job_id(job.id());
    m.mutable_cancel()->set_keep_staging(keep_staging);
    w.link.send(m);  // the worker answers JobFinished, which frees it
  }
}

void Coordinator::WorkerLostLocked(WorkerEntry* w, const std::string& why) {
  if (w->info.state() == "LOST") return;
  const std::string job_id = w->info.job_id();
  w->info.set_state("LOST");
  w->info.clear_job_id();
  PersistWorkerLocked(*w);
  spdlog::warn("worker {} lost: {}", w->info.id(), why);
  if (job_id.empty()) return;
  WorkerStoppedLocked(job_id);
  auto a = active_.find(job_id);
  if (a == active_.end() || a->second.job.state() != v1::RUNNING) return;
  const v1::Job& job = a->second.job;
  bool member = false;
  for (const auto& id : job.worker_ids()) member = member || id == w->info.id();
  if (!member) return;
  AttemptLostLocked(job, absl::StrCat("worker ", w->info.id(), " was lost (", why, ")"), w->info.id());
}

void Coordinator::AttemptLostLocked(v1::Job job, const std::string& why, const std::string& except) {
  ReleaseGangLocked(job, except, /*keep_staging=*/true);
  if (job.attempts() >= std::max(1, job.max_attempts())) {
    std::string msg = absl::StrCat(why, " in attempt ", job.attempts(), " of ", job.max_attempts(),
                                   "; giving up. Check the workers' logs, then resubmit");
    job.set_error(msg);
    if (SetStateLocked(&job, v1::FAILED, msg, "ATTEMPTS_EXHAUSTED").ok()) RemoveStagingWhenStoppedLocked(job);
    return;
  }
  job.clear_worker_ids();
  std::string msg = absl::StrCat(why, " in attempt ", job.attempts(), "; re-queued to resume at block ",
                                 job.finished_blocks());
  if (SetStateLocked(&job, v1::RETRYING, msg).ok()) metrics_->job_retries->Inc();
  kick_ = true;
  loop_cv_.SignalAll();
}

void Coordinator::FailJobLocked(v1::Job job, const std::string& error, absl::StatusCode code) {
  job.set_error(error);
  if (code != absl::StatusCode::kOk && code != absl::StatusCode::kUnknown)
    job.set_error_code(absl::StatusCodeToString(code));
  if (!SetStateLocked(&job, v1::FAILED, error).ok()) return;
  ReleaseGangLocked(job, "", /*keep_staging=*/false);
  RemoveStagingWhenStoppedLocked(job);
}

int Coordinator::RanksRunningLocked(const std::string& job_id) const {
  int n = 0;
  for (const auto& [id, w] : workers_) n += w.info.state() == "BUSY" && w.info.job_id() == job_id;
  return n;
}

void Coordinator::RemoveStagingWhenStoppedLocked(const v1::Job& job) {
  if (RanksRunningLocked(job.id()) == 0) {
    RemoveStagingNowLocked(job);
    cleanup_.erase(job.id());
  } else {
    cleanup_[job.id()] = PendingCleanup{job, 0};
  }
}

void Coordinator::WorkerStoppedLocked(const std::string& job_id) {
  auto it = cleanup_.find(job_id);
  if (it == cleanup_.end() || it->second.not_before_ms > NowMs() || RanksRunningLocked(job_id) > 0) return;
  RemoveStagingNowLocked(it->second.job);
  cleanup_.erase(it);
}

void Coordinator::RemoveStagingNowLocked(const v1::Job& job) {
  const std::string dir = StagingDirFor(job);
  absl::Status s = absl::OkStatus();
  if (!dir.empty()) {
    // By path, but beneath the job's own roots (its tenant's with --tenant-roots) and never through a link: an
    // output parent swapped for a link after the job was queued leads the removal nowhere.
    auto policy = options_.policy.ForTenant(job.tenant());
    if (!policy.ok()) {
      s = policy.status();
    } else {
      storage::ConfinementRoots roots;
      roots.read_write = policy->local_rw();
      roots.denied = policy->denied();
      auto confinement = storage::PathConfinement::Create(roots);
      s = confinement.ok() ? confinement->RemoveTree(absl::StrCat("job ", job.id(), " staging"), dir)
                           : confinement.status();
    }
  }
  if (!s.ok()) {
    // Refused (a link, outside the roots) or failed: logged, and not tried again (the operator can look at it).
    spdlog::warn("job {}: staging {} not removed: {}", job.id(), dir, s.ToString());
  }
  absl::Status done = store_->StagingRemoved(job.id());
  if (!done.ok()) spdlog::warn("job {}: cannot record the staging removal: {}", job.id(), done.ToString());
}

void Coordinator::OnWorkerDisconnected(const std::string& worker_id, int64_t session) {
  absl::MutexLock l(&mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.session != session) return;
  WorkerLostLocked(&it->second, "its connection closed");
  it->second.link = WorkerLink{};
}

v1::Job* Coordinator::RunningJobLocked(const std::string& job_id, int attempt, const std::string& worker_id) {
  auto a = active_.find(job_id);
  if (a == active_.end()) return nullptr;
  v1::Job& job = a->second.job;
  if (job.state() != v1::RUNNING || job.attempts() != attempt) return nullptr;
  if (job.worker_ids_size() == 0 || job.worker_ids(0) != worker_id) return nullptr;
  return &job;
}

void Coordinator::RendezvousLocked(const std::string& worker_id, const v1::RendezvousSet& set) {
  auto a = active_.find(set.job_id());
  if (a == active_.end()) return;
  const v1::Job& job = a->second.job;
  bool member = false;
  for (const auto& id : job.worker_ids()) member = member || id == worker_id;
  if (job.state() != v1::RUNNING || job.attempts() != set.attempt() || !member) return;  // a stale or foreign rank
  ActiveJob& aj = a->second;
  if (aj.rendezvous_attempt != set.attempt()) {
    aj.rendezvous.clear();
    aj.rendezvous_attempt = set.attempt();
  }
  const size_t max_keys = 64 + 4 * static_cast<size_t>(job.worker_ids_size());
  if (!IsPortableName(set.key(), rpc::kMaxRendezvousKeyLength) || set.value().size() > rpc::kMaxRendezvousValueBytes ||
      (aj.rendezvous.size() >= max_keys && !aj.rendezvous.count(set.key()))) {
    spdlog::warn("job {}: worker {}: rendezvous key dropped ({} bytes; keys are [A-Za-z0-9._-]{{1,200}}, values at "
                 "most 64 KiB, at most {} keys)", job.id(), worker_id, set.value().size(), max_keys);
    return;
  }
  aj.rendezvous[set.key()] = set.value();
  v1::CoordinatorMessage m;
  auto* v = m.mutable_rendezvous_value();
  v->set_job_id(set.job_id());
  v->set_attempt(set.attempt());
  v->set_key(set.key());
  v->set_value(set.value());
  for (const auto& id : job.worker_ids()) {
    auto w = workers_.find(id);
    if (w != workers_.end() && w->second.link.send && !w->second.link.send(m))
      spdlog::warn("job {}: cannot relay rendezvous key {} to worker {}", job.id(), set.key(), id);
  }
}

void Coordinator::OnWorkerMessage(const std::string& worker_id, int64_t session, const v1::WorkerMessage& msg) {
  absl::MutexLock l(&mu_);
  auto it = workers_.find(worker_id);
  if (it == workers_.end() || it->second.session != session || it->second.info.state() == "LOST") return;
  WorkerEntry& w = it->second;
  const int64_t now = NowMs();
  w.lease_deadline_ms = now + options_.lease_ms;
  w.info.set_last_heartbeat_ms(now);
  switch (msg.msg_case()) {
    case v1::WorkerMessage::kHeartbeat:
      HeartbeatLocked(&w, msg.heartbeat());
      break;
    case v1::WorkerMessage::kRendezvousSet:
      RendezvousLocked(worker_id, msg.rendezvous_set());
      break;
    case v1::WorkerMessage::kProgress: {
      v1::Job* job = RunningJobLocked(msg.progress().job_id(), msg.progress().attempt(), worker_id);
      if (!job) break;
      *job->mutable_progress() = WithFraction(msg.progress().progress());
      v1::JobEvent e;
      e.set_type("progress");
      e.set_state(job->state());
      *e.mutable_progress() = job->progress();
      e.set_message(job->progress().stage());
      CommitLocked(job, {e}).IgnoreError();
      break;
    }
    case v1::WorkerMessage::kBlockDone: {
      v1::Job* job = RunningJobLocked(msg.block_done().job_id(), msg.block_done().attempt(), worker_id);
      if (!job) break;
      metrics_->blocks->Inc();
      if (msg.block_done().block() != job->finished_blocks()) break;  // not the next consecutive block
      job->set_finished_blocks(job->finished_blocks() + 1);
      v1::JobEvent e;
      e.set_type("block");
      e.set_state(job->state());
      *e.mutable_progress() = job->progress();
      e.set_message(absl::StrCat("block ", msg.block_done().block(), " durable; ", job->finished_blocks(),
                                 " finished (resume point)"));
      CommitLocked(job, {e}).IgnoreError();
      break;
    }
    case v1::WorkerMessage::kFinished: {
      const auto& f = msg.finished();
      // Whether this worker ran that attempt of the job, and as which rank (before freeing it clears both).
      const bool ran = w.info.state() == "BUSY" && w.info.job_id() == f.job_id() && w.attempt == f.attempt();
      const int rank = w.info.rank();
      if (w.info.job_id() == f.job_id()) {
        FreeWorkerLocked(&w);
        WorkerStoppedLocked(f.job_id());
      }
      if (ran) RankFinishedLocked(worker_id, rank, f);
      break;
    }
    default:
      break;
  }
}

void Coordinator::RankFinishedLocked(const std::string& worker_id, int rank, const v1::JobFinished& f) {
  auto a = active_.find(f.job_id());
  if (a == active_.end() || a->second.job.attempts() != f.attempt()) return;
  v1::Job job = a->second.job;
  // The attempt's gang (smaller than gpus when the job went on with fewer workers); a job waiting to be re-formed
  // no longer lists its workers: it was a gang if it asked for one.
  const int world = std::max(1, job.worker_ids_size() > 0 ? job.worker_ids_size() : job.spec().gpus());
  const auto code = static_cast<absl::StatusCode>(f.code());
  // The worker was stopped (CANCELLED while the job runs), or the gang broke (a collective aborted because another
  // rank died or stopped, or the ranks could not meet): the attempt is lost, not the job.
  const bool attempt_lost = code == absl::StatusCode::kCancelled || (world > 1 && rpc::IsGangFailure(code));
  const std::string who = world > 1 ? absl::StrCat("rank ", rank, " (worker ", worker_id, ")") : "";
  if (job.state() == v1::RUNNING) {
    if (f.ok()) {
      if (rank != 0) return;  // its share is done; rank 0 reports the job
      job.set_summary_json(f.summary_json());
      CountSummaryLocked(job, f.summary_json());
      if (SetStateLocked(&job, v1::SUCCEEDED, absl::StrCat("finished on worker ", worker_id)).ok())
        ReleaseGangLocked(job, worker_id, /*keep_staging=*/true);
      return;
    }
    if (attempt_lost) {
      AttemptLostLocked(job, absl::StrCat(world > 1 ? who : absl::StrCat("worker ", worker_id), " stopped (",
                                          f.error(), ")"),
                        worker_id);
    } else {
      FailJobLocked(job, world > 1 ? absl::StrCat(who, ": ", f.error()) : f.error(), code);
    }
    return;
  }
  // The attempt's gang broke and the job waits for its ranks to stop before it is re-formed. A rank that failed
  // for a reason of its own (a bad input on its host, ...) says why the gang broke: the job fails rather than
  // repeat the failure.
  if (job.state() == v1::RETRYING && world > 1 && !f.ok() && !attempt_lost)
    FailJobLocked(job, absl::StrCat(who, ": ", f.error()), code);
}

void Coordinator::HeartbeatLocked(WorkerEntry* w, const v1::Heartbeat& hb) {
  if (hb.has_device()) w->device = hb.device();
  if (!hb.has_storage()) return;
  // Cumulative counters of the worker process: add the increase; a smaller value is a restarted process (add all).
  const v1::StorageCounters& now = hb.storage();
  v1::StorageCounters& seen = w->storage_seen;
  auto add = [](Counter* c, uint64_t cur, uint64_t prev) { c->Inc({}, static_cast<double>(cur >= prev ? cur - prev : cur)); };
  add(metrics_->storage_uploaded, now.bytes_uploaded(), seen.bytes_uploaded());
  add(metrics_->storage_downloaded, now.bytes_downloaded(), seen.bytes_downloaded());
  add(metrics_->storage_retries, now.retries(), seen.retries());
  add(metrics_->storage_failures, now.failed_requests(), seen.failed_requests());
  seen = now;
}

void Coordinator::CountSummaryLocked(const v1::Job& job, const std::string& summary_json) {
  const auto j = nlohmann::json::parse(summary_json, nullptr, false);
  if (!j.is_object()) return;
  // A number >= 0 at j[key], else 0.
  auto number = [](const nlohmann::json& o, const char* key) {
    if (!o.is_object()) return 0.0;
    const auto it = o.find(key);
    return it != o.end() && it->is_number() && it->get<double>() >= 0 ? it->get<double>() : 0.0;
  };
  metrics_->bytes_written->Inc({}, number(j, "output_bytes"));
  metrics_->bytes_read->Inc({}, number(j, "input_bytes"));
  const auto solve = j.find("solve");
  if (solve == j.end() || !solve->is_object()) return;  // data-free: no calibration
  const std::string algorithm = MethodLabelsOf(job.spec()).algorithm;
  const auto calib = solve->find("calibration");
  if (calib != solve->end()) metrics_->calib_tokens->Inc({algorithm}, number(*calib, "tokens"));
  metrics_->calib_seconds->Inc({algorithm}, number(*solve, "seconds"));
  // Every rank's collectives, from rank 0's report (solve.ranks).
  const auto ranks = solve->find("ranks");
  if (ranks == solve->end() || !ranks->is_array()) return;
  for (const auto& r : *ranks) {
    if (!r.is_object() || !r.contains("communication")) continue;
    metrics_->comm_seconds->Inc({}, number(r["communication"], "seconds"));
    metrics_->comm_bytes->Inc({}, number(r["communication"], "bytes"));
  }
}

void Coordinator::ScheduleLocked() {
  std::vector<QueuedJob> queued;
  for (const auto& [id, a] : active_)
    if (a.job.state() == v1::QUEUED || a.job.state() == v1::RETRYING)
      queued.push_back({id, a.job.spec().priority(), a.queue_seq, a.job.spec().gpus(), RanksRunningLocked(id),
                        a.job.spec().min_gpus()});
  if (queued.empty()) return;
  std::vector<IdleWorker> idle;
  int live = 0;
  for (const auto& [id, w] : workers_) {
    if (w.info.state() == "LOST") continue;
    ++live;
    if (w.info.state() == "IDLE") idle.push_back({id, w.idle_since_ms});
  }
  ScheduleResult r = Schedule(std::move(queued), std::move(idle), live);
  for (const auto& wait : r.waiting) {
    auto a = active_.find(wait.job_id);
    if (a == active_.end() || a->second.wait_reason == wait.reason) continue;
    // Behind the head, only the blocker's id changes each time a job starts: an event (an fsynced commit)
    // per queued job per start made scheduling O(queue) writes (bench/load). Keep the first such event.
    constexpr absl::string_view kBehind = "queued behind job ";
    if (absl::StartsWith(a->second.wait_reason, kBehind) && absl::StartsWith(wait.reason, kBehind)) continue;
    a->second.wait_reason = wait.reason;
    v1::Job& job = a->second.job;
    job.set_message(wait.reason);
    CommitLocked(&job, {LogEvent(job.state(), wait.reason)}).IgnoreError();
  }
  for (const auto& pl : r.placements) {
    auto a = active_.find(pl.job_id);
    if (a == active_.end()) continue;
    v1::Job job = a->second.job;
    a->second.wait_reason.clear();
    job.set_attempts(job.attempts() + 1);
    job.clear_worker_ids();
    for (const auto& id : pl.worker_ids) job.add_worker_ids(id);
    std::string msg = absl::StrCat("attempt ", job.attempts(), " on ", absl::StrJoin(pl.worker_ids, ", "));
    if (job.finished_blocks() > 0) absl::StrAppend(&msg, "; resuming at block ", job.finished_blocks());
    if (!SetStateLocked(&job, v1::RUNNING, msg).ok()) continue;
    const std::string staging = StagingDirFor(job);
    for (size_t rank = 0; rank < pl.worker_ids.size(); ++rank) {
      WorkerEntry& w = workers_[pl.worker_ids[rank]];
      w.info.set_state("BUSY");
      w.info.set_job_id(job.id());
      w.info.set_rank(static_cast<int>(rank));
      w.attempt = job.attempts();
      PersistWorkerLocked(w);
      v1::CoordinatorMessage m;
      auto* as = m.mutable_assign();
      as->set_job_id(job.id());
      *as->mutable_spec() = job.spec();
      as->set_attempt(job.attempts());
      as->set_resume_from_block(job.finished_blocks());
      as->set_staging_dir(staging);
      as->set_rank(static_cast<int>(rank));
      as->set_world_size(static_cast<int>(pl.worker_ids.size()));
      // The job's own roots (per tenant when --tenant-roots); none if they cannot be made: every local path then
      // fails on the worker, naming it.
      auto pol = options_.policy.ForTenant(job.tenant());
      if (pol.ok()) {
        for (const auto& r : pol->local_rw()) as->add_allowed_roots(r);
        for (const auto& r : pol->local_ro()) as->add_input_roots(r);
        for (const auto& d : pol->denied()) as->add_denied_dirs(d);
      } else {
        spdlog::warn("job {}: {}", job.id(), pol.status().ToString());
      }
      if (!w.link.send(m)) spdlog::warn("worker {}: cannot send the assignment of {}", w.info.id(), job.id());
    }
    spdlog::info("job {}: {}", job.id(), msg);
  }
}

void Coordinator::Collect() {
  // One GROUP BY gives both the per-state and the per-tenant counts.
  auto counts = store_->CountByTenantAndState();
  std::map<int, int64_t> by_state;
  metrics_->tenant_jobs->Clear();
  if (counts.ok())
    for (const auto& [key, n] : *counts) {
      by_state[key.second] += n;
      metrics_->tenant_jobs->Set({key.first, StateName(static_cast<v1::JobState>(key.second))}, static_cast<double>(n));
    }
  metrics_->jobs->Clear();
  for (auto s : {v1::QUEUED, v1::RUNNING, v1::SUCCEEDED, v1::FAILED, v1::CANCELLED, v1::RETRYING})
    metrics_->jobs->Set({StateName(s)}, static_cast<double>(by_state[s]));
  absl::MutexLock l(&mu_);
  const int64_t now = NowMs();
  int64_t queued = 0, oldest_ms = 0;
  for (auto* g : {metrics_->job_info, metrics_->job_progress, metrics_->job_blocks_done, metrics_->job_blocks_total,
                  metrics_->job_attempts})
    g->Clear();
  for (const auto& [id, a] : active_) {
    const v1::Job& job = a.job;
    if (job.state() == v1::QUEUED || job.state() == v1::RETRYING) {
      ++queued;
      if (job.create_time_ms() > 0) oldest_ms = std::max(oldest_ms, now - job.create_time_ms());
    }
    // Per-job series only for jobs that started (RUNNING, or RETRYING after an attempt): at most about one per
    // worker, whatever the queue holds; queued jobs are counted above.
    if (job.state() != v1::RUNNING && job.state() != v1::RETRYING) continue;
    const MethodLabels m = MethodLabelsOf(job.spec());
    metrics_->job_info->Set({id, job.tenant(), StateName(job.state()), m.algorithm, m.scheme}, 1);
    metrics_->job_progress->Set({id}, job.progress().fraction());
    metrics_->job_blocks_done->Set({id}, job.finished_blocks());
    metrics_->job_blocks_total->Set({id}, job.progress().blocks_total());
    metrics_->job_attempts->Set({id}, job.attempts());
  }
  metrics_->queue_depth->Set(static_cast<double>(queued));
  metrics_->oldest_queued->Set(oldest_ms / 1000.0);
  std::map<std::string, int> workers_by_state{{"IDLE", 0}, {"BUSY", 0}, {"LOST", 0}};
  int gang = 0;
  for (auto* g : {metrics_->worker_info, metrics_->worker_job, metrics_->worker_mem_used, metrics_->worker_mem_total,
                  metrics_->worker_util})
    g->Clear();
  for (const auto& [id, w] : workers_) {
    workers_by_state[w.info.state()]++;
    metrics_->worker_info->Set({id, w.info.host(), w.info.device(), w.info.state()}, 1);
    if (w.info.state() == "LOST") continue;  // its last figures are stale
    if (w.device.valid()) {
      metrics_->worker_mem_used->Set({id}, static_cast<double>(w.device.memory_used_bytes()));
      metrics_->worker_mem_total->Set({id}, static_cast<double>(w.device.memory_total_bytes()));
      if (w.device.utilization() >= 0) metrics_->worker_util->Set({id}, w.device.utilization());
    }
    if (w.info.state() != "BUSY") continue;
    metrics_->worker_job->Set({id, w.info.job_id(), absl::StrCat(w.info.rank())}, 1);
    auto a = active_.find(w.info.job_id());
    if (a != active_.end() && a->second.job.worker_ids_size() > 1) ++gang;
  }
  metrics_->gang_workers->Set({}, gang);
  metrics_->workers->Clear();
  for (const auto& [s, n] : workers_by_state) metrics_->workers->Set({s}, n);
}

}  // namespace llmc::server
