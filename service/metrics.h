// A small Prometheus metrics registry: counter, gauge and histogram families with labels, rendered in the
// Prometheus text exposition format (version 0.0.4). prometheus-cpp is not packaged for Debian 12, so llmc
// carries this instead (docs/service.md lists every metric).
//
// Thread-safety: every method is thread-safe. Families are owned by the registry and live as long as it does;
// the pointers AddCounter/AddGauge/AddHistogram return stay valid.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"

namespace llmc::service {

// Label values in the order of the family's label names.
using LabelValues = std::vector<std::string>;

class MetricFamily {
 public:
  MetricFamily(std::string name, std::string help, std::string type, std::vector<std::string> label_names)
      : name_(std::move(name)), help_(std::move(help)), type_(std::move(type)), label_names_(std::move(label_names)) {}
  virtual ~MetricFamily() = default;
  const std::string& name() const { return name_; }
  // Appends "# HELP", "# TYPE" and the samples.
  virtual void Render(std::string* out) const = 0;

 protected:
  // `{a="x",b="y"}` with `extra` (e.g. le="0.5") appended; "" without labels.
  std::string LabelText(const LabelValues& values, const std::string& extra = "") const;
  void Header(std::string* out) const;
  std::string name_, help_, type_;
  std::vector<std::string> label_names_;
};

class Counter final : public MetricFamily {
 public:
  Counter(std::string name, std::string help, std::vector<std::string> labels)
      : MetricFamily(std::move(name), std::move(help), "counter", std::move(labels)) {}
  // Adds `v` (>= 0; negative values are ignored) to the series `labels`.
  void Inc(const LabelValues& labels = {}, double v = 1);
  double Value(const LabelValues& labels = {}) const;
  void Render(std::string* out) const override;

 private:
  mutable std::mutex mu_;
  std::map<LabelValues, double> values_ ABSL_GUARDED_BY(mu_);
};

class Gauge final : public MetricFamily {
 public:
  Gauge(std::string name, std::string help, std::vector<std::string> labels)
      : MetricFamily(std::move(name), std::move(help), "gauge", std::move(labels)) {}
  void Set(const LabelValues& labels, double v);
  void Set(double v) { Set({}, v); }
  // Drops every series (collectors call it before setting the current ones).
  void Clear();
  double Value(const LabelValues& labels = {}) const;
  void Render(std::string* out) const override;

 private:
  mutable std::mutex mu_;
  std::map<LabelValues, double> values_ ABSL_GUARDED_BY(mu_);
};

class Histogram final : public MetricFamily {
 public:
  // `buckets`: increasing upper bounds; +Inf is added.
  Histogram(std::string name, std::string help, std::vector<std::string> labels, std::vector<double> buckets)
      : MetricFamily(std::move(name), std::move(help), "histogram", std::move(labels)), bounds_(std::move(buckets)) {}
  void Observe(const LabelValues& labels, double v);
  void Observe(double v) { Observe({}, v); }
  uint64_t Count(const LabelValues& labels = {}) const;
  void Render(std::string* out) const override;

 private:
  struct Series {
    std::vector<uint64_t> counts;  // per bucket (not cumulative), last is +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::map<LabelValues, Series> series_ ABSL_GUARDED_BY(mu_);
};

class MetricsRegistry {
 public:
  // Names must match [a-zA-Z_:][a-zA-Z0-9_:]* and be unique; label names [a-zA-Z_][a-zA-Z0-9_]*. A bad name is
  // a programming error: it aborts.
  Counter* AddCounter(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
  Gauge* AddGauge(const std::string& name, const std::string& help, std::vector<std::string> labels = {});
  Histogram* AddHistogram(const std::string& name, const std::string& help, std::vector<std::string> labels,
                          std::vector<double> buckets);
  // Runs before every Render (e.g. to set gauges from current state). Must not call Render.
  void AddCollector(std::function<void()> collect);
  // The whole registry in the text exposition format, families in registration order.
  std::string Render() const;

 private:
  void Check(const std::string& name, const std::vector<std::string>& labels);
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<MetricFamily>> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> collectors_ ABSL_GUARDED_BY(mu_);
};

// Escapes a label value for the text format: backslash, double quote and newline.
std::string EscapeLabelValue(const std::string& v);
// Formats a sample value: integers without a fraction, +Inf/-Inf/NaN as Prometheus spells them.
std::string FormatMetricValue(double v);

// The service's metrics (docs/service.md, "Metrics").
struct ServiceMetrics {
  explicit ServiceMetrics(MetricsRegistry* r);
  MetricsRegistry* registry;
  Gauge* jobs;                 // llmc_jobs{state}
  Gauge* queue_depth;          // llmc_queue_depth
  Gauge* workers;              // llmc_workers{state}
  Histogram* job_duration;     // llmc_job_duration_seconds{state}
  Counter* jobs_finished;      // llmc_jobs_finished_total{state}
  Counter* jobs_created;       // llmc_jobs_created_total
  Counter* job_retries;        // llmc_job_retries_total
  Counter* rpcs;               // llmc_rpc_requests_total{method,code}
  Histogram* rpc_latency;      // llmc_rpc_duration_seconds{method}
  Counter* blocks;             // llmc_blocks_finished_total
  Counter* bytes_written;      // llmc_output_bytes_written_total
  Counter* http_requests;      // llmc_http_requests_total{path,status}
};

}  // namespace llmc::service
