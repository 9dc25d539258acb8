#include "server/metrics.h"

#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <regex>

#include "absl/status/status.h"
#include "engine/format/algorithms.h"

namespace llmc::server {

void Counter::Inc(const LabelValues& labels, double v) {
  if (!(v >= 0)) return;  // counters only go up (NaN is ignored too)
  Series(labels).Increment(v);
}

double Counter::Value(const LabelValues& labels) { return Series(labels).Value(); }

void Gauge::Set(const LabelValues& labels, double v) {
  prometheus::Gauge& g = Series(labels);
  g.Set(v);
  absl::MutexLock l(&mu_);
  if (std::find(series_.begin(), series_.end(), &g) == series_.end()) series_.push_back(&g);
}

void Gauge::Clear() {
  absl::MutexLock l(&mu_);
  for (prometheus::Gauge* g : series_) family_->Remove(g);
  series_.clear();
}

double Gauge::Value(const LabelValues& labels) { return Series(labels).Value(); }

void Histogram::Observe(const LabelValues& labels, double v) { Series(labels, bounds_).Observe(v); }

uint64_t Histogram::Count(const LabelValues& labels) {
  const prometheus::ClientMetric m = Series(labels, bounds_).Collect();
  return m.histogram.sample_count;
}

MetricsRegistry::MetricsRegistry() : registry_(std::make_shared<prometheus::Registry>()) {}

void MetricsRegistry::CheckLocked(const std::string& name, const std::string& help,
                                  const std::vector<std::string>& labels) {
  static const std::regex metric_re("[a-zA-Z_:][a-zA-Z0-9_:]*"), label_re("[a-zA-Z_][a-zA-Z0-9_]*");
  bool ok = std::regex_match(name, metric_re) && std::find(names_.begin(), names_.end(), name) == names_.end();
  for (const auto& l : labels) ok = ok && std::regex_match(l, label_re) && l != "le" && l.rfind("__", 0) != 0;
  ok = ok && help.find_first_of("\n\\") == std::string::npos;  // the serializer writes HELP unescaped
  if (!ok) {
    std::fprintf(stderr, "metrics: bad or duplicate metric '%s'\n", name.c_str());
    std::abort();
  }
  names_.push_back(name);
}

Counter* MetricsRegistry::AddCounter(const std::string& name, const std::string& help, std::vector<std::string> labels) {
  absl::MutexLock l(&mu_);
  CheckLocked(name, help, labels);
  const bool unlabelled = labels.empty();
  auto& family = prometheus::BuildCounter().Name(name).Help(help).Register(*registry_);
  counters_.push_back(std::make_unique<Counter>(&family, std::move(labels)));
  if (unlabelled) counters_.back()->Inc({}, 0);  // the one series exists from the start, at 0
  return counters_.back().get();
}

Gauge* MetricsRegistry::AddGauge(const std::string& name, const std::string& help, std::vector<std::string> labels) {
  absl::MutexLock l(&mu_);
  CheckLocked(name, help, labels);
  const bool unlabelled = labels.empty();
  auto& family = prometheus::BuildGauge().Name(name).Help(help).Register(*registry_);
  gauges_.push_back(std::make_unique<Gauge>(&family, std::move(labels)));
  if (unlabelled) gauges_.back()->Set(0);
  return gauges_.back().get();
}

Histogram* MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                         std::vector<std::string> labels, std::vector<double> buckets) {
  absl::MutexLock l(&mu_);
  CheckLocked(name, help, labels);
  auto& family = prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_);
  histograms_.push_back(std::make_unique<Histogram>(&family, std::move(labels), std::move(buckets)));
  return histograms_.back().get();
}

void MetricsRegistry::AddCollector(std::function<void()> collect) {
  absl::MutexLock l(&mu_);
  collectors_.push_back(std::move(collect));
}

std::string MetricsRegistry::Render() {
  std::vector<std::function<void()>> collectors;
  {
    absl::MutexLock l(&mu_);
    collectors = collectors_;
  }
  for (const auto& c : collectors) c();
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

ServiceMetrics::ServiceMetrics(MetricsRegistry* r) : registry(r) {
  jobs = r->AddGauge("llmc_jobs", "Jobs in the job store by state.", {"state"});
  queue_depth = r->AddGauge("llmc_queue_depth", "Jobs waiting for workers (QUEUED or RETRYING).");
  workers = r->AddGauge("llmc_workers", "Registered workers by state (IDLE, BUSY, LOST).", {"state"});
  gang_workers = r->AddGauge("llmc_gang_workers", "Busy workers running a rank of a job on several workers.");
  comm_seconds = r->AddCounter("llmc_communication_seconds_total",
                               "Seconds the ranks of succeeded multi-worker jobs spent in collectives (all ranks).");
  comm_bytes = r->AddCounter("llmc_communication_bytes_total",
                             "Bytes the ranks of succeeded multi-worker jobs passed to collectives (all ranks).");
  static const std::vector<double> kJobSeconds = {1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400};
  job_duration = r->AddHistogram("llmc_job_duration_seconds",
                                 "Seconds from a job's first start to its end, by final state, algorithm and scheme.",
                                 {"state", "algorithm", "scheme"}, kJobSeconds);
  queue_wait = r->AddHistogram("llmc_job_queue_wait_seconds",
                               "Seconds from a job's creation to its first start, by algorithm and scheme.",
                               {"algorithm", "scheme"}, {0.1, 0.5, 1, 5, 15, 30, 60, 300, 900, 1800, 3600, 14400, 86400});
  jobs_finished = r->AddCounter("llmc_jobs_finished_total", "Jobs that reached a final state, by state.", {"state"});
  job_failures = r->AddCounter("llmc_job_failures_total",
                               "Jobs that FAILED, by reason: the canonical code of the failure or ATTEMPTS_EXHAUSTED.",
                               {"reason"});
  jobs_created = r->AddCounter("llmc_jobs_created_total", "Jobs created (idempotent repeats not counted).");
  job_retries = r->AddCounter("llmc_job_retries_total", "Times a running job was re-queued (worker lost or coordinator restart).");
  rpcs = r->AddCounter("llmc_rpc_requests_total", "gRPC calls handled, by method and status code.", {"method", "code"});
  rpc_latency = r->AddHistogram("llmc_rpc_duration_seconds",
                                "Seconds to handle a unary gRPC call (streams: until the stream closes), by method.",
                                {"method"}, {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300});
  blocks = r->AddCounter("llmc_blocks_finished_total", "Decoder blocks made durable by workers (BlockDone).");
  bytes_written = r->AddCounter("llmc_output_bytes_written_total", "Checkpoint bytes written by succeeded jobs.");
  bytes_read = r->AddCounter("llmc_input_bytes_read_total", "Model tensor bytes read by succeeded jobs.");
  calib_tokens = r->AddCounter("llmc_calibration_tokens_total",
                               "Calibration tokens of succeeded calibrated jobs (all ranks), by algorithm.", {"algorithm"});
  calib_seconds = r->AddCounter("llmc_calibration_seconds_total",
                                "Seconds of the calibrated pipeline (rank 0) of succeeded jobs, by algorithm.", {"algorithm"});
  storage_uploaded = r->AddCounter("llmc_storage_uploaded_bytes_total",
                                   "Bytes the workers stored in object storage (s3://), from their heartbeats.");
  storage_downloaded = r->AddCounter("llmc_storage_downloaded_bytes_total",
                                     "Bytes the workers fetched from object storage (s3://), from their heartbeats.");
  storage_retries = r->AddCounter("llmc_storage_retries_total",
                                  "Object-storage requests the workers sent again after a retryable failure.");
  storage_failures = r->AddCounter("llmc_storage_request_failures_total",
                                   "Object-storage requests of the workers that failed for good (NOT_FOUND answers aside).");
  tenant_jobs = r->AddGauge("llmc_tenant_jobs", "Jobs in the job store by tenant and state.", {"tenant", "state"});
  oldest_queued = r->AddGauge("llmc_queue_oldest_job_age_seconds",
                              "Seconds since the oldest QUEUED or RETRYING job was created (0: none waits).");
  worker_info = r->AddGauge("llmc_worker_info", "1 per worker known to the coordinator, with its host, device and state.",
                            {"worker", "host", "device", "state"});
  worker_job = r->AddGauge("llmc_worker_job", "1 per busy worker: the job it runs and its rank in it.",
                           {"worker", "job_id", "rank"});
  worker_mem_used = r->AddGauge("llmc_worker_device_memory_used_bytes",
                                "Memory in use on a live worker's device (GPU, or the host for cpu workers).", {"worker"});
  worker_mem_total = r->AddGauge("llmc_worker_device_memory_total_bytes",
                                 "Memory of a live worker's device (GPU, or the host for cpu workers).", {"worker"});
  worker_util = r->AddGauge("llmc_worker_device_utilization_ratio",
                            "Busy share (0 to 1) of a live worker's device over its last heartbeat period.", {"worker"});
  job_info = r->AddGauge("llmc_job_info", "1 per RUNNING or RETRYING job with its tenant, state and method.",
                         {"job_id", "tenant", "state", "algorithm", "scheme"});
  job_progress = r->AddGauge("llmc_job_progress_ratio", "Progress (0 to 1) of a RUNNING or RETRYING job as its workers report it.",
                             {"job_id"});
  job_blocks_done = r->AddGauge("llmc_job_blocks_done", "Decoder blocks durable (the resume point) of a RUNNING or RETRYING job.",
                                {"job_id"});
  job_blocks_total = r->AddGauge("llmc_job_blocks_total", "Decoder blocks of a RUNNING or RETRYING calibrated job (0 until known).",
                                 {"job_id"});
  job_attempts = r->AddGauge("llmc_job_attempts", "Attempts started so far of a RUNNING or RETRYING job.", {"job_id"});
  // Known label values start at 0, so the first event after a restart shows in increase() and rate() (a series
  // that appears with 1 has no earlier sample to differ from). Histograms are left out: algorithm x scheme is many.
  for (const char* st : {"SUCCEEDED", "FAILED", "CANCELLED"}) jobs_finished->Inc({st}, 0);
  for (int c = 1; c <= 16; ++c)
    job_failures->Inc({absl::StatusCodeToString(static_cast<absl::StatusCode>(c))}, 0);
  job_failures->Inc({"ATTEMPTS_EXHAUSTED"}, 0);
  for (const AlgorithmInfo& a : Algorithms())
    if (a.needs_calibration) {
      calib_tokens->Inc({a.name}, 0);
      calib_seconds->Inc({a.name}, 0);
    }
  http_requests = r->AddCounter("llmc_http_requests_total", "HTTP requests served, by route and status.", {"route", "status"});
  http_connections = r->AddGauge("llmc_http_connections", "HTTP connections open now.", {});
  http_connections->Set(0);
  http_refused = r->AddCounter("llmc_http_connections_refused_total",
                               "HTTP connections closed as soon as they were accepted, by the limit they were over: "
                               "per_client (--http-max-connections-per-client) or total (--http-max-connections).",
                               {"reason"});
  http_refused->Inc({"per_client"}, 0);
  http_refused->Inc({"total"}, 0);
}

}  // namespace llmc::server
