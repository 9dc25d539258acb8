// The coordinator's Prometheus metrics on prometheus-cpp (Debian's prometheus-cpp-dev): its registry holds the
// series and its text serializer renders them (exposition format 0.0.4) behind the HTTP server's /metrics.
// The small adapters below keep the call sites short: a family is addressed by label *values* in the order of
// its label names, and collectors run before every render to set gauges from current state.
//
// Thread-safety: every method is thread-safe. Families are owned by the registry and live as long as it does;
// the pointers AddCounter/AddGauge/AddHistogram return stay valid. docs/service.md lists every metric.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace llmc::server {

// Label values in the order of the family's label names.
using LabelValues = std::vector<std::string>;

// A family of series with fixed label names. T is prometheus::Counter, Gauge or Histogram.
template <typename T>
class MetricFamily {
 public:
  MetricFamily(prometheus::Family<T>* family, std::vector<std::string> label_names)
      : family_(family), label_names_(std::move(label_names)) {}

 protected:
  // The series for `values` (created on first use). Values beyond the label names are a programming error.
  template <typename... Args>
  T& Series(const LabelValues& values, Args&&... args) {
    prometheus::Labels labels;
    for (size_t i = 0; i < label_names_.size(); ++i) labels[label_names_[i]] = i < values.size() ? values[i] : "";
    return family_->Add(labels, std::forward<Args>(args)...);
  }
  prometheus::Family<T>* const family_;
  const std::vector<std::string> label_names_;
};

class Counter final : public MetricFamily<prometheus::Counter> {
 public:
  using MetricFamily::MetricFamily;
  // Adds `v` (>= 0; negative values are ignored) to the series `labels`.
  void Inc(const LabelValues& labels = {}, double v = 1);
  double Value(const LabelValues& labels = {});
};

class Gauge final : public MetricFamily<prometheus::Gauge> {
 public:
  using MetricFamily::MetricFamily;
  void Set(const LabelValues& labels, double v);
  void Set(double v) { Set({}, v); }
  // Drops every series (collectors call it before setting the current ones).
  void Clear();
  double Value(const LabelValues& labels = {});

 private:
  absl::Mutex mu_;
  std::vector<prometheus::Gauge*> series_ ABSL_GUARDED_BY(mu_);  // every series Set made, for Clear
};

class Histogram final : public MetricFamily<prometheus::Histogram> {
 public:
  // `buckets`: increasing upper bounds (inclusive); +Inf is added.
  Histogram(prometheus::Family<prometheus::Histogram>* family, std::vector<std::string> label_names,
            std::vector<double> buckets)
      : MetricFamily(family, std::move(label_names)), bounds_(std::move(buckets)) {}
  void Observe(const LabelValues& labels, double v);
  void Observe(double v) { Observe({}, v); }
  uint64_t Count(const LabelValues& labels = {});

 private:
  const prometheus::Histogram::BucketBoundaries bounds_;
};

class MetricsRegistry {
 public:
  MetricsRegistry();
  // Names follow Prometheus (metric [a-zA-Z_:][a-zA-Z0-9_:]*, label [a-zA-Z_][a-zA-Z0-9_]*, not reserved, unique)
  // and help is one line without backslashes (prometheus-cpp writes it unescaped); anything else is a
  // programming error: it aborts. Families without labels start with one series at 0; labelled families
  // appear in the output once they have a series. Labels render sorted by name.
  Counter* AddCounter(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
  Gauge* AddGauge(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
  Histogram* AddHistogram(const std::string& name, const std::string& help, std::vector<std::string> labels,
                          std::vector<double> buckets);
  // Runs before every Render (e.g. to set gauges from current state). Must not call Render.
  void AddCollector(std::function<void()> collect);
  // Runs the collectors, then the whole registry in the text exposition format (prometheus-cpp's serializer).
  std::string Render();

  prometheus::Registry& registry() { return *registry_; }

 private:
  void CheckLocked(const std::string& name, const std::string& help, const std::vector<std::string>& labels)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::shared_ptr<prometheus::Registry> registry_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<Counter>> counters_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Gauge>> gauges_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Histogram>> histograms_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> names_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> collectors_ ABSL_GUARDED_BY(mu_);
};

// The service's metrics (docs/service.md, "Metrics"). Label values are bounded: states, canonical code names, the
// algorithm and scheme registries, tenants and workers (both set by the operator), and job ids only on the
// per-job gauges of started jobs (RUNNING, RETRYING), whose series go when the job ends or waits again.
struct ServiceMetrics {
  explicit ServiceMetrics(MetricsRegistry* r);
  MetricsRegistry* registry;
  Gauge* jobs;                 // llmc_jobs{state}
  Gauge* tenant_jobs;          // llmc_tenant_jobs{tenant,state}
  Gauge* queue_depth;          // llmc_queue_depth
  Gauge* oldest_queued;        // llmc_queue_oldest_job_age_seconds
  Gauge* workers;              // llmc_workers{state}
  Gauge* gang_workers;         // llmc_gang_workers
  Counter* comm_seconds;       // llmc_communication_seconds_total
  Counter* comm_bytes;         // llmc_communication_bytes_total
  Histogram* job_duration;     // llmc_job_duration_seconds{state,algorithm,scheme}
  Histogram* queue_wait;       // llmc_job_queue_wait_seconds{algorithm,scheme}
  Counter* jobs_finished;      // llmc_jobs_finished_total{state}
  Counter* job_failures;       // llmc_job_failures_total{reason}
  Counter* jobs_created;       // llmc_jobs_created_total
  Counter* job_retries;        // llmc_job_retries_total
  Counter* rpcs;               // llmc_rpc_requests_total{method,code}
  Histogram* rpc_latency;      // llmc_rpc_duration_seconds{method}
  Counter* blocks;             // llmc_blocks_finished_total
  Counter* bytes_written;      // llmc_output_bytes_written_total
  Counter* bytes_read;         // llmc_input_bytes_read_total
  Counter* calib_tokens;       // llmc_calibration_tokens_total{algorithm}
  Counter* calib_seconds;      // llmc_calibration_seconds_total{algorithm}
  Counter* storage_uploaded;   // llmc_storage_uploaded_bytes_total
  Counter* storage_downloaded; // llmc_storage_downloaded_bytes_total
  Counter* storage_retries;    // llmc_storage_retries_total
  Counter* storage_failures;   // llmc_storage_request_failures_total
  Gauge* worker_info;          // llmc_worker_info{worker,host,device,state}
  Gauge* worker_job;           // llmc_worker_job{worker,job_id,rank}
  Gauge* worker_mem_used;      // llmc_worker_device_memory_used_bytes{worker}
  Gauge* worker_mem_total;     // llmc_worker_device_memory_total_bytes{worker}
  Gauge* worker_util;          // llmc_worker_device_utilization_ratio{worker}
  Gauge* job_info;             // llmc_job_info{job_id,tenant,state,algorithm,scheme}
  Gauge* job_progress;         // llmc_job_progress_ratio{job_id}
  Gauge* job_blocks_done;      // llmc_job_blocks_done{job_id}
  Gauge* job_blocks_total;     // llmc_job_blocks_total{job_id}
  Gauge* job_attempts;         // llmc_job_attempts{job_id}
  Counter* http_requests;      // llmc_http_requests_total{route,status}
  Gauge* http_connections;     // llmc_http_connections (open now)
  Counter* http_refused;       // llmc_http_connections_refused_total{reason}: per_client, total
};

}  // namespace llmc::server
