#include "worker/worker.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <grpcpp/grpcpp.h>
#include <spdlog/spdlog.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "common/util.h"
#include "engine/dist/make_communicator.h"
#include "proto/channel.h"
#include "proto/spec_convert.h"
#include "storage/storage_stats.h"
#include "worker/job_io.h"

namespace llmc::worker {

namespace fs = std::filesystem;

namespace {

std::string HostName() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "localhost";
  return buf;
}

v1::Progress ToProto(const CompressProgress& p) {
  v1::Progress o;
  o.set_blocks_done(p.blocks_done);
  o.set_blocks_total(p.blocks_total);
  o.set_modules_done(p.modules_done);
  o.set_modules_total(p.modules_total);
  o.set_bytes_done(p.bytes_done);
  o.set_bytes_total(p.bytes_total);
  o.set_stage(p.stage);
  return o;
}

}  // namespace

Worker::Worker(WorkerOptions options)
    : options_(std::move(options)), host_(HostName()), sampler_(MakeDeviceStatsSampler(options_.device)) {}

Worker::~Worker() {
  Stop();
  if (job_thread_.joinable()) job_thread_.join();
}

void Worker::Stop() {
  stop_ = true;
  cancel_ = true;  // keep_staging stays as is: a stopped worker's job is re-queued and resumes
  absl::MutexLock l(&mu_);
  if (gang_) gang_->Close();
  if (ctx_) ctx_->TryCancel();
  session_cv_.SignalAll();
}

bool Worker::Send(const v1::WorkerMessage& m) {
  absl::MutexLock l(&mu_);
  if (!stream_ || !session_up_) return false;
  return stream_->Write(m);
}

void Worker::Heartbeats(int64_t lease_ms) {
  const absl::Duration period = absl::Milliseconds(std::max<int64_t>(100, lease_ms / 3));
  for (;;) {
    {
      absl::MutexLock l(&mu_);
      const absl::Time deadline = absl::Now() + period;
      while (session_up_ && !stop_ && !session_cv_.WaitWithDeadline(&mu_, deadline)) {
      }
      if (!session_up_ || stop_) return;
    }
    const v1::WorkerMessage m = HeartbeatMessage();  // samples the device outside the lock
    absl::MutexLock l(&mu_);
    if (!session_up_ || stop_) return;
    stream_->Write(m);
  }
}

v1::WorkerMessage Worker::HeartbeatMessage() {
  v1::WorkerMessage m;
  auto* hb = m.mutable_heartbeat();
  hb->set_time_ms(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
  const DeviceSample d = sampler_->Sample();
  auto* dev = hb->mutable_device();
  dev->set_valid(d.valid);
  if (d.valid) {
    dev->set_memory_used_bytes(d.memory_used_bytes);
    dev->set_memory_total_bytes(d.memory_total_bytes);
    dev->set_utilization(d.utilization);
  } else if (!logged_sample_error_) {
    spdlog::warn("worker: no device figures in the heartbeats ({}): {}", options_.device, d.why);
    logged_sample_error_ = true;
  }
  const storage::StorageStats& st = storage::ProcessStorageStats();
  auto* s = hb->mutable_storage();
  s->set_bytes_uploaded(st.bytes_uploaded.load(std::memory_order_relaxed));
  s->set_bytes_downloaded(st.bytes_downloaded.load(std::memory_order_relaxed));
  s->set_retries(st.retries.load(std::memory_order_relaxed));
  s->set_failed_requests(st.failed_requests.load(std::memory_order_relaxed));
  return m;
}

absl::Status Worker::Run() {
  const std::string worker_id = options_.worker_id.empty() ? absl::StrCat(host_, "-", getpid()) : options_.worker_id;
  int64_t backoff_ms = 200;
  bool logged_wait = false;
  while (!stop_) {
    auto channel = rpc::MakeChannel(options_.coordinator, options_.ca_cert);
    auto stub = v1::WorkerService::NewStub(channel);
    grpc::ClientContext ctx;
    auto stream = stub->Connect(&ctx);
    {
      absl::MutexLock l(&mu_);
      ctx_ = &ctx;
      stream_ = stream.get();
    }
    if (stop_) ctx.TryCancel();
    v1::WorkerMessage reg;
    reg.mutable_register_()->set_worker_id(worker_id);
    reg.mutable_register_()->set_host(host_);
    reg.mutable_register_()->set_device(options_.device);
    reg.mutable_register_()->set_token(options_.token);
    v1::CoordinatorMessage msg;
    int64_t lease_ms = 0;
    if (stream->Write(reg) && stream->Read(&msg) && msg.has_registered()) lease_ms = msg.registered().lease_ms();
    if (lease_ms > 0) {
      spdlog::info("worker {}: registered with {} (lease {} ms)", worker_id, options_.coordinator, lease_ms);
      backoff_ms = 200;
      logged_wait = false;
      std::thread hb;
      {
        absl::MutexLock l(&mu_);
        session_up_ = true;
      }
      hb = std::thread([this, lease_ms] { Heartbeats(lease_ms); });
      while (stream->Read(&msg)) {
        if (msg.has_assign()) {
          const v1::Assignment& as = msg.assign();
          if (job_running_) {
            spdlog::warn("worker {}: assignment of {} while busy; ignored", worker_id, as.job_id());
            continue;
          }
          if (job_thread_.joinable()) job_thread_.join();
          // A gang's store exists before the next message is read: the relayed keys of the other ranks follow
          // the assignment on this stream.
          std::shared_ptr<GangStore> gang;
          if (as.world_size() > 1)
            gang = std::make_shared<GangStore>(as.job_id(), as.attempt(),
                                               [this](const v1::WorkerMessage& m) { return Send(m); });
          {
            absl::MutexLock l(&mu_);
            job_id_ = as.job_id();
            gang_ = gang;
          }
          cancel_ = false;
          keep_staging_ = true;
          job_running_ = true;
          job_thread_ = std::thread([this, a = as, gang] { RunAssignment(a, gang); });
        } else if (msg.has_cancel()) {
          absl::MutexLock l(&mu_);
          if (job_running_ && job_id_ == msg.cancel().job_id()) {
            keep_staging_ = msg.cancel().keep_staging();
            cancel_ = true;
            if (gang_) gang_->Close();  // a rank still meeting its gang stops waiting
            spdlog::info("worker {}: job {}: {}", worker_id, job_id_,
                         msg.cancel().keep_staging() ? "moved elsewhere; stopping" : "cancelled; stopping");
          }
        } else if (msg.has_rendezvous_value()) {
          absl::MutexLock l(&mu_);
          if (!gang_ || !gang_->Deliver(msg.rendezvous_value()))
            spdlog::debug("worker {}: rendezvous key {} of {} attempt {} is not for the current job; dropped",
                          worker_id, msg.rendezvous_value().key(), msg.rendezvous_value().job_id(),
                          msg.rendezvous_value().attempt());
        }
      }
      // The connection is gone: stop the job, keeping its staging output for the resume.
      keep_staging_ = true;
      cancel_ = true;
      {
        absl::MutexLock l(&mu_);
        if (gang_) gang_->Close();
      }
      if (job_thread_.joinable()) job_thread_.join();
      {
        absl::MutexLock l(&mu_);
        session_up_ = false;
        session_cv_.SignalAll();
      }
      hb.join();
    }
    {
      absl::MutexLock l(&mu_);
      stream_ = nullptr;
      session_up_ = false;
    }
    stream->WritesDone();
    grpc::Status st = stream->Finish();
    {
      absl::MutexLock l(&mu_);
      ctx_ = nullptr;
    }
    if (stop_) break;
    if (st.error_code() == grpc::StatusCode::UNAUTHENTICATED || st.error_code() == grpc::StatusCode::PERMISSION_DENIED)
      return absl::Status(static_cast<absl::StatusCode>(st.error_code()),
                          absl::StrCat("the coordinator at ", options_.coordinator, " refused this worker: ", st.error_message()));
    if (lease_ms > 0) spdlog::warn("worker {}: disconnected ({}); reconnecting", worker_id, st.error_message());
    else if (!logged_wait) {
      spdlog::info("worker {}: waiting for the coordinator at {} ({})", worker_id, options_.coordinator,
                   st.error_message());
      logged_wait = true;
    }
    {
      absl::MutexLock l(&mu_);
      const absl::Time deadline = absl::Now() + absl::Milliseconds(backoff_ms);
      while (!stop_ && !session_cv_.WaitWithDeadline(&mu_, deadline)) {
      }
    }
    backoff_ms = std::min<int64_t>(backoff_ms * 2, 3000);
  }
  return absl::OkStatus();
}

void Worker::RunAssignment(v1::Assignment a, std::shared_ptr<GangStore> gang) {
  spdlog::info("job {}: attempt {} rank {}/{}{}", a.job_id(), a.attempt(), a.rank(), a.world_size(),
               a.resume_from_block() > 0 ? absl::StrCat(", resuming at block ", a.resume_from_block()) : "");
  std::unique_ptr<Communicator> comm;
  v1::WorkerMessage end = RunJob(a, gang.get(), &comm);
  {
    absl::MutexLock l(&mu_);
    if (gang_ == gang) gang_.reset();
  }
  // Idle before the report: the coordinator may send the next assignment as soon as it has it. The report goes
  // out before this rank's communicator closes, so a rank that failed on its own is heard before the others,
  // whose collectives then fail (ABORTED) on the closed connection.
  job_running_ = false;
  if (!Send(end)) spdlog::warn("job {}: could not report the end (disconnected)", a.job_id());
  comm.reset();
}

v1::WorkerMessage Worker::RunJob(const v1::Assignment& a, GangStore* gang, std::unique_ptr<Communicator>* comm) {
  auto finished = [&](const absl::Status& s, const std::string& summary) {
    v1::WorkerMessage m;
    auto* f = m.mutable_finished();
    f->set_job_id(a.job_id());
    f->set_attempt(a.attempt());
    f->set_ok(s.ok());
    f->set_code(static_cast<int>(s.code()));
    f->set_error(std::string(s.message()));
    f->set_summary_json(summary);
    return m;
  };
  // Rank 0 writes the output (staging, resume, durable blocks, progress); the other ranks of a gang compute their
  // share and write nothing (rank 0 tells them where the job resumes).
  const bool writer = a.rank() == 0;
  const bool gang_job = a.world_size() > 1;
  const v1::JobSpec& spec = a.spec();
  // The URIs go to the job path as they are: it resolves them (file:// or s3://) and publishes the output.
  auto e = rpc::ToEngineSpec(spec, spec.model_uri(), spec.output_uri(), spec.calibration().dataset_uri());
  if (!e.ok()) return finished(e.status(), "");
  e->threads = options_.threads;
  e->device = options_.device;
  // Every local file of the job is opened beneath the roots the coordinator sent, now (worker/job_paths.h).
  storage::ConfinementRoots roots;
  roots.read_write.assign(a.allowed_roots().begin(), a.allowed_roots().end());
  roots.read_only.assign(a.input_roots().begin(), a.input_roots().end());
  roots.denied.assign(a.denied_dirs().begin(), a.denied_dirs().end());
  auto confinement = storage::PathConfinement::Create(roots);
  if (!confinement.ok()) return finished(confinement.status(), "");
  JobRequest request;
  request.confinement = &*confinement;
  request.spec = *e;
  request.eval_text = spec.eval_text_uri();
  request.eval_max_windows = 200;
  request.job_id = a.job_id();

  JobControl c;
  c.cancel = &cancel_;
  c.on_warning = [&](const std::string& w) { spdlog::warn("job {}: {}", a.job_id(), w); };
  int64_t last_sent = 0;
  int last_blocks = -1;
  if (writer) {
    c.staging_dir = a.staging_dir();
    c.keep_staging = true;
    c.resume_from_block = a.resume_from_block();
    // Resuming needs this job's staging here (object-storage outputs stage in a scratch directory: start over).
    if (c.resume_from_block > 0 && (c.staging_dir.empty() || !fs::is_directory(c.staging_dir))) {
      spdlog::warn("job {}: staging {} is not here; starting from block 0", a.job_id(), c.staging_dir);
      c.resume_from_block = 0;
    }
    c.on_progress = [&](const CompressProgress& p) {
      const int64_t now = SteadyMs();
      if (now - last_sent < 1000 && p.blocks_done == last_blocks) return;
      last_sent = now;
      last_blocks = p.blocks_done;
      v1::WorkerMessage m;
      m.mutable_progress()->set_job_id(a.job_id());
      m.mutable_progress()->set_attempt(a.attempt());
      *m.mutable_progress()->mutable_progress() = ToProto(p);
      Send(m);
    };
    c.on_block_done = [&](int block) {
      v1::WorkerMessage m;
      m.mutable_block_done()->set_job_id(a.job_id());
      m.mutable_block_done()->set_attempt(a.attempt());
      m.mutable_block_done()->set_block(block);
      Send(m);
      if (options_.block_delay_ms > 0)
        for (int t = 0; t < options_.block_delay_ms && !cancel_; t += 10)
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
    };
  }
  if (gang_job) {
    // Gloo between cpu workers, NCCL between cuda workers (each on its device 0: one GPU per worker).
    CommOptions g;
    g.backend = DefaultCommBackend(options_.device);
    g.rank = a.rank();
    g.size = a.world_size();
    g.hostname = options_.comm_address;
    if (g.hostname == "hostname") {  // this machine's (or container's) name, as the others resolve it
      char host[256] = {};
      if (gethostname(host, sizeof(host) - 1) == 0 && host[0] != '\0') g.hostname = host;
    }
    g.prefix = absl::StrCat(a.job_id(), ".attempt", a.attempt());
    g.timeout = absl::Seconds(options_.comm_timeout_s);
    const int64_t t0 = SteadyMs();
    absl::StatusOr<std::unique_ptr<Communicator>> formed = absl::InternalError("no rendezvous store for the gang");
    if (gang) formed = MakeCommunicator(g, gang);
    if (!formed.ok()) {
      if (cancel_) return finished(absl::CancelledError("cancelled while the ranks were meeting"), "");
      spdlog::warn("job {}: rank {} of {}: {}", a.job_id(), a.rank(), a.world_size(), formed.status().ToString());
      return finished(formed.status(), "");
    }
    spdlog::info("job {}: rank {} of {} joined its gang in {} ms", a.job_id(), a.rank(), a.world_size(),
                 SteadyMs() - t0);
    *comm = std::move(*formed);
    c.comm = comm->get();
  }
  auto result = RunJobToOutput(request, c);
  if (result.ok()) {
    if (writer) spdlog::info("job {}: done ({} -> {})", a.job_id(), spec.model_uri(), spec.output_uri());
    else spdlog::info("job {}: rank {} done", a.job_id(), a.rank());
    return finished(absl::OkStatus(), result->report.dump());
  }
  const absl::Status& s = result.status();
  // The staging output is rank 0's: kept when the job moves (or the gang broke: it will be re-formed and resume),
  // removed when it was cancelled or failed. The coordinator removes what is left of a job that ends anyway.
  const bool keep = cancel_ ? keep_staging_.load() : gang_job && rpc::IsGangFailure(s.code());
  if (writer && !keep && !c.staging_dir.empty()) {
    // Beneath the job's roots, never through a link (the output parent may have been swapped since).
    absl::Status removed = confinement->RemoveTree("staging", c.staging_dir);
    if (!removed.ok()) spdlog::warn("job {}: staging not removed: {}", a.job_id(), removed.ToString());
  }
  spdlog::info("job {}: rank {}: {}{}", a.job_id(), a.rank(), s.ToString(),
               writer && keep ? " (staging kept for the resume)" : "");
  return finished(s, "");
}

}  // namespace llmc::worker
