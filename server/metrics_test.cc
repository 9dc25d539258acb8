#include "server/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace llmc::server {
namespace {

using ::testing::HasSubstr;

TEST(MetricsTest, CounterWithLabelsAndEscaping) {
  MetricsRegistry r;
  Counter* c = r.AddCounter("llmc_test_total", "A test counter.", {"method", "code"});
  c->Inc({"Get\"Job\"", "OK"});
  c->Inc({"Get\"Job\"", "OK"}, 2);
  c->Inc({"a\\b\nc", "NOT_FOUND"});
  c->Inc({"x", "y"}, -5);  // ignored
  std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("# HELP llmc_test_total A test counter.\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE llmc_test_total counter\n"));
  EXPECT_THAT(text, HasSubstr("llmc_test_total{code=\"OK\",method=\"Get\\\"Job\\\"\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("llmc_test_total{code=\"NOT_FOUND\",method=\"a\\\\b\\nc\"} 1\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("code=\"y\"")));
}

TEST(MetricsTest, UnlabelledFamiliesRenderZero) {
  MetricsRegistry r;
  r.AddCounter("llmc_a_total", "a");
  r.AddGauge("llmc_b", "b");
  std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("llmc_a_total 0\n"));
  EXPECT_THAT(text, HasSubstr("llmc_b 0\n"));
}

TEST(MetricsTest, GaugeCollectorAndValues) {
  MetricsRegistry r;
  Gauge* g = r.AddGauge("llmc_g", "g", {"state"});
  int calls = 0;
  r.AddCollector([&] {
    ++calls;
    g->Clear();
    g->Set({"IDLE"}, 2);
    g->Set({"BUSY"}, 0.5);
  });
  g->Set({"STALE"}, 9);
  std::string text = r.Render();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(g->Value({"IDLE"}), 2);
  EXPECT_THAT(text, HasSubstr("llmc_g{state=\"IDLE\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("llmc_g{state=\"BUSY\"} 0.5\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("STALE")));
}

TEST(MetricsTest, HistogramBucketsAreCumulative) {
  MetricsRegistry r;
  Histogram* h = r.AddHistogram("llmc_h_seconds", "h", {"m"}, {0.1, 1, 10});
  h->Observe({"x"}, 0.05);
  h->Observe({"x"}, 0.1);  // le is inclusive
  h->Observe({"x"}, 5);
  h->Observe({"x"}, 50);
  std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("llmc_h_seconds_bucket{m=\"x\",le=\"0.1\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("llmc_h_seconds_bucket{m=\"x\",le=\"1\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("llmc_h_seconds_bucket{m=\"x\",le=\"10\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("llmc_h_seconds_bucket{m=\"x\",le=\"+Inf\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("llmc_h_seconds_sum{m=\"x\"} 55.15"));
  EXPECT_THAT(text, HasSubstr("llmc_h_seconds_count{m=\"x\"} 4\n"));
  EXPECT_EQ(h->Count({"x"}), 4u);
}

TEST(MetricsTest, SpecialValues) {
  MetricsRegistry r;
  Gauge* g = r.AddGauge("llmc_special", "s", {"k"});
  g->Set({"inf"}, 1.0 / 0.0);
  g->Set({"neg"}, -2);
  g->Set({"nan"}, 0.0 / 0.0);
  std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("llmc_special{k=\"inf\"} +Inf\n"));
  EXPECT_THAT(text, HasSubstr("llmc_special{k=\"neg\"} -2\n"));
  EXPECT_THAT(text, HasSubstr("llmc_special{k=\"nan\"} Nan\n"));
}

TEST(MetricsTest, BadNamesAbort) {
  MetricsRegistry r;
  EXPECT_DEATH(r.AddCounter("1bad", "x"), "bad or duplicate");
  EXPECT_DEATH(r.AddCounter("ok_total", "x", {"le"}), "bad or duplicate");
  r.AddCounter("dup_total", "x");
  EXPECT_DEATH(r.AddCounter("dup_total", "x"), "bad or duplicate");
  // prometheus-cpp writes HELP text as it is: a newline or backslash would break the exposition format.
  EXPECT_DEATH(r.AddGauge("llmc_help", "two\nlines"), "bad or duplicate");
}

TEST(MetricsTest, ServiceMetricsRender) {
  MetricsRegistry r;
  ServiceMetrics m(&r);
  m.rpcs->Inc({"GetJob", "OK"});
  m.job_duration->Observe({"SUCCEEDED", "gptq", "W4A16"}, 12);
  m.queue_wait->Observe({"gptq", "W4A16"}, 0.3);
  m.job_failures->Inc({"ATTEMPTS_EXHAUSTED"});
  std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("llmc_rpc_requests_total{code=\"OK\",method=\"GetJob\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("llmc_job_duration_seconds_count{algorithm=\"gptq\",scheme=\"W4A16\",state=\"SUCCEEDED\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("llmc_job_queue_wait_seconds_bucket{algorithm=\"gptq\",scheme=\"W4A16\",le=\"0.5\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("llmc_job_failures_total{reason=\"ATTEMPTS_EXHAUSTED\"} 1\n"));
  // Unlabelled counters exist from the start, so rate() over them has data before the first event.
  for (const char* c : {"llmc_input_bytes_read_total 0\n", "llmc_storage_uploaded_bytes_total 0\n",
                        "llmc_storage_downloaded_bytes_total 0\n", "llmc_storage_retries_total 0\n",
                        "llmc_storage_request_failures_total 0\n", "llmc_queue_oldest_job_age_seconds 0\n"})
    EXPECT_THAT(text, HasSubstr(c));
  // Known label values start at 0 too: the first failure or calibrated job after a restart shows in increase().
  EXPECT_THAT(text, HasSubstr("llmc_job_failures_total{reason=\"NOT_FOUND\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("llmc_job_failures_total{reason=\"UNAUTHENTICATED\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("llmc_jobs_finished_total{state=\"FAILED\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("llmc_calibration_tokens_total{algorithm=\"gptq\"} 0\n"));
  EXPECT_THAT(text, HasSubstr("llmc_calibration_seconds_total{algorithm=\"sparsegpt\"} 0\n"));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("reason=\"OK\"")));
  EXPECT_THAT(text, ::testing::Not(HasSubstr("algorithm=\"rtn\"")));  // data-free: no calibration series
  EXPECT_THAT(text, HasSubstr("llmc_queue_depth 0\n"));
  EXPECT_THAT(text, HasSubstr("llmc_jobs_created_total 0\n"));
  // Labelled families have no series until one is used (no empty-label series).
  EXPECT_THAT(text, ::testing::Not(HasSubstr("state=\"\"")));
}

}  // namespace
}  // namespace llmc::server
