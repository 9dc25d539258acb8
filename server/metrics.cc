#include "server/metrics.h"

#include <prometheus/text_serializer.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <regex>

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
  job_duration = r->AddHistogram("llmc_job_duration_seconds",
                                 "Seconds from a job's first start to its end, by final state.", {"state"},
                                 {1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400});
  jobs_finished = r->AddCounter("llmc_jobs_finished_total", "Jobs that reached a final state, by state.", {"state"});
  jobs_created = r->AddCounter("llmc_jobs_created_total", "Jobs created (idempotent repeats not counted).");
  job_retries = r->AddCounter("llmc_job_retries_total", "Times a running job was re-queued (worker lost or coordinator restart).");
  rpcs = r->AddCounter("llmc_rpc_requests_total", "gRPC calls handled, by method and status code.", {"method", "code"});
  rpc_latency = r->AddHistogram("llmc_rpc_duration_seconds",
                                "Seconds to handle a unary gRPC call (streams: until the stream closes), by method.",
                                {"method"}, {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 300});
  blocks = r->AddCounter("llmc_blocks_finished_total", "Decoder blocks made durable by workers (BlockDone).");
  bytes_written = r->AddCounter("llmc_output_bytes_written_total", "Checkpoint bytes written by succeeded jobs.");
  http_requests = r->AddCounter("llmc_http_requests_total", "HTTP requests served, by route and status.", {"route", "status"});
}

}  // namespace llmc::server
