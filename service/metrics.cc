#include "service/metrics.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace llmc::service {

namespace {

bool ValidName(const std::string& n, bool allow_colon) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    char c = n[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':') ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

std::string EscapeHelp(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

}  // namespace

std::string EscapeLabelValue(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string FormatMetricValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrCat(static_cast<int64_t>(v));
  char buf[64];
  for (int prec = 15; prec <= 17; ++prec) {  // the shortest text that reads back as v
    std::snprintf(buf, sizeof(buf), "%.*g", prec, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::string MetricFamily::LabelText(const LabelValues& values, const std::string& extra) const {
  if (label_names_.empty() && extra.empty()) return "";
  std::string s = "{";
  for (size_t i = 0; i < label_names_.size(); ++i) {
    if (i) s += ",";
    absl::StrAppend(&s, label_names_[i], "=\"", EscapeLabelValue(i < values.size() ? values[i] : ""), "\"");
  }
  if (!extra.empty()) absl::StrAppend(&s, label_names_.empty() ? "" : ",", extra);
  return s + "}";
}

void MetricFamily::Header(std::string* out) const {
  absl::StrAppend(out, "# HELP ", name_, " ", EscapeHelp(help_), "\n# TYPE ", name_, " ", type_, "\n");
}

void Counter::Inc(const LabelValues& labels, double v) {
  if (!(v >= 0)) return;
  std::lock_guard<std::mutex> l(mu_);
  values_[labels] += v;
}

double Counter::Value(const LabelValues& labels) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = values_.find(labels);
  return it == values_.end() ? 0 : it->second;
}

void Counter::Render(std::string* out) const {
  Header(out);
  std::lock_guard<std::mutex> l(mu_);
  if (values_.empty() && label_names_.empty()) absl::StrAppend(out, name_, " 0\n");
  for (const auto& [k, v] : values_) absl::StrAppend(out, name_, LabelText(k), " ", FormatMetricValue(v), "\n");
}

void Gauge::Set(const LabelValues& labels, double v) {
  std::lock_guard<std::mutex> l(mu_);
  values_[labels] = v;
}

void Gauge::Clear() {
  std::lock_guard<std::mutex> l(mu_);
  values_.clear();
}

double Gauge::Value(const LabelValues& labels) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = values_.find(labels);
  return it == values_.end() ? 0 : it->second;
}

void Gauge::Render(std::string* out) const {
  Header(out);
  std::lock_guard<std::mutex> l(mu_);
  if (values_.empty() && label_names_.empty()) absl::StrAppend(out, name_, " 0\n");
  for (const auto& [k, v] : values_) absl::StrAppend(out, name_, LabelText(k), " ", FormatMetricValue(v), "\n");
}

void Histogram::Observe(const LabelValues& labels, double v) {
  std::lock_guard<std::mutex> l(mu_);
  Series& s = series_[labels];
  if (s.counts.empty()) s.counts.assign(bounds_.size() + 1, 0);
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  s.counts[i]++;
  s.sum += v;
  s.count++;
}

uint64_t Histogram::Count(const LabelValues& labels) const {
  std::lock_guard<std::mutex> l(mu_);
  auto it = series_.find(labels);
  return it == series_.end() ? 0 : it->second.count;
}

void Histogram::Render(std::string* out) const {
  Header(out);
  std::lock_guard<std::mutex> l(mu_);
  auto render = [&](const LabelValues& k, const Series& s) {
    uint64_t cum = 0;
    for (size_t i = 0; i <= bounds_.size(); ++i) {
      cum += s.counts.empty() ? 0 : s.counts[i];
      std::string le = i < bounds_.size() ? FormatMetricValue(bounds_[i]) : "+Inf";
      absl::StrAppend(out, name_, "_bucket", LabelText(k, absl::StrCat("le=\"", le, "\"")), " ", cum, "\n");
    }
    absl::StrAppend(out, name_, "_sum", LabelText(k), " ", FormatMetricValue(s.sum), "\n");
    absl::StrAppend(out, name_, "_count", LabelText(k), " ", s.count, "\n");
  };
  if (series_.empty() && label_names_.empty()) render({}, Series{});
  for (const auto& [k, s] : series_) render(k, s);
}

void MetricsRegistry::Check(const std::string& name, const std::vector<std::string>& labels) {
  bool ok = ValidName(name, true);
  for (const auto& l : labels) ok = ok && ValidName(l, false) && l != "le" && l.rfind("__", 0) != 0;
  for (const auto& f : families_) ok = ok && f->name() != name;
  if (!ok) {
    std::fprintf(stderr, "llmc: metrics: bad or duplicate metric name %s\n", name.c_str());
    std::abort();
  }
}

Counter* MetricsRegistry::AddCounter(const std::string& name, const std::string& help, std::vector<std::string> labels) {
  std::lock_guard<std::mutex> l(mu_);
  Check(name, labels);
  families_.push_back(std::make_unique<Counter>(name, help, std::move(labels)));
  return static_cast<Counter*>(families_.back().get());
}

Gauge* MetricsRegistry::AddGauge(const std::string& name, const std::string& help, std::vector<std::string> labels) {
  std::lock_guard<std::mutex> l(mu_);
  Check(name, labels);
  families_.push_back(std::make_unique<Gauge>(name, help, std::move(labels)));
  return static_cast<Gauge*>(families_.back().get());
}

Histogram* MetricsRegistry::AddHistogram(const std::string& name, const std::string& help,
                                         std::vector<std::string> labels, std::vector<double> buckets) {
  std::lock_guard<std::mutex> l(mu_);
  Check(name, labels);
  families_.push_back(std::make_unique<Histogram>(name, help, std::move(labels), std::move(buckets)));
  return static_cast<Histogram*>(families_.back().get());
}

void MetricsRegistry::AddCollector(std::function<void()> collect) {
  std::lock_guard<std::mutex> l(mu_);
  collectors_.push_back(std::move(collect));
}

std::string MetricsRegistry::Render() const {
  std::vector<std::function<void()>> collectors;
  {
    std::lock_guard<std::mutex> l(mu_);
    collectors = collectors_;
  }
  for (const auto& c : collectors) c();
  std::string out;
  std::lock_guard<std::mutex> l(mu_);
  for (const auto& f : families_) f->Render(&out);
  return out;
}

ServiceMetrics::ServiceMetrics(MetricsRegistry* r) : registry(r) {
  jobs = r->AddGauge("llmc_jobs", "Jobs in the job store by state.", {"state"});
  queue_depth = r->AddGauge("llmc_queue_depth", "Jobs waiting for workers (QUEUED or RETRYING).");
  workers = r->AddGauge("llmc_workers", "Registered workers by state (IDLE, BUSY, LOST).", {"state"});
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

}  // namespace llmc::service
