// libFuzzer target for what the coordinator does with a client's request before anything is stored: the first byte
// picks the entry point, the rest is the request.
//   0: JobSpec protobuf bytes -> Coordinator::ValidateJob (spec limits, URIs and roots, spec -> engine conversion,
//      recipe/preset resolution: what CreateJob checks before it stores a job)
//   1: a JSON body -> CreateJobRequest with protobuf's JSON mapping (the POST /api/v1/jobs handler) -> ValidateJob
//   2: ListJobsRequest protobuf bytes -> Coordinator::ListJobs (filters, page tokens) on a store with a few jobs
// Besides the sanitizers, it checks the service's promises for client mistakes: never UNKNOWN or INTERNAL, and an
// error message of bounded size (a few KiB whatever the input).
//
// Built by scripts/fuzz.sh (clang, LLMC_BUILD_FUZZ=ON); tests/fuzz/replay_main.cc runs the same entry point over
// the seed corpus in every build (ctest FuzzServiceRequestsReplay).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include <google/protobuf/util/json_util.h>
#include <spdlog/spdlog.h>

#include "absl/status/status.h"
#include "server/access_policy.h"
#include "server/coordinator.h"
#include "server/job_store.h"
#include "server/metrics.h"

namespace {

using llmc::server::Coordinator;

struct Harness {
  std::string dir;
  std::unique_ptr<llmc::server::JobStore> store;
  llmc::server::MetricsRegistry registry;
  std::unique_ptr<llmc::server::ServiceMetrics> metrics;
  std::unique_ptr<Coordinator> coordinator;

  Harness() {
    char tmpl[] = "/tmp/llmc-fuzz-XXXXXX";
    if (!mkdtemp(tmpl)) std::abort();
    dir = tmpl;
    std::filesystem::create_directories(dir + "/root");
    auto s = llmc::server::JobStore::Open(dir + "/jobs.db");
    if (!s.ok()) std::abort();
    store = std::move(*s);
    metrics = std::make_unique<llmc::server::ServiceMetrics>(&registry);
    llmc::server::CoordinatorOptions o;
    auto pol = llmc::server::AccessPolicy::Create({dir + "/root", "s3://bucket/team"}, {}, {dir + "/data"});
    if (!pol.ok()) std::abort();
    o.policy = *pol;
    o.check_local_paths = false;  // no file system work per input
    coordinator = std::make_unique<Coordinator>(std::move(o), store.get(), metrics.get());
    // A few jobs for ListJobs to page through.
    for (int i = 0; i < 3; ++i) {
      llmc::v1::CreateJobRequest r;
      r.set_request_id("seed-" + std::to_string(i));
      r.mutable_spec()->set_model_uri(dir + "/root/model");
      r.mutable_spec()->set_output_uri(dir + "/root/out" + std::to_string(i));
      r.mutable_spec()->mutable_preset()->set_scheme("W4A16");
      (*r.mutable_spec()->mutable_labels())["k"] = std::to_string(i % 2);
      if (!coordinator->CreateJob({"t", llmc::server::Role::kSubmitter}, r).ok()) std::abort();
    }
  }
  ~Harness() {
    coordinator.reset();
    store.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
};

void Check(const absl::Status& s, const char* what) {
  if (s.ok()) return;
  if (s.code() == absl::StatusCode::kUnknown || s.code() == absl::StatusCode::kInternal) {
    std::fprintf(stderr, "%s: %s for a client's request\n", what, s.ToString().c_str());
    std::abort();
  }
  if (s.message().size() > 4096) {
    std::fprintf(stderr, "%s: an error message of %zu bytes\n", what, s.message().size());
    std::abort();
  }
}

Harness* g_harness = nullptr;

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (!g_harness) {  // one coordinator for the whole run, its directory removed at exit
    spdlog::set_level(spdlog::level::warn);
    g_harness = new Harness();
    std::atexit([] { delete g_harness; });
  }
  Harness* h = g_harness;
  if (size < 1) return 0;
  const int mode = data[0] % 3;
  const char* body = reinterpret_cast<const char*>(data + 1);
  const size_t n = size - 1;
  const llmc::server::Principal admin{"default", llmc::server::Role::kAdmin};
  const llmc::server::Principal viewer{"t", llmc::server::Role::kViewer};
  if (mode == 0) {
    llmc::v1::JobSpec spec;
    if (!spec.ParseFromArray(body, static_cast<int>(n))) return 0;
    Check(h->coordinator->ValidateJob(admin, spec).status(), "ValidateJob");
  } else if (mode == 1) {
    llmc::v1::CreateJobRequest r;
    if (!google::protobuf::util::JsonStringToMessage(std::string(body, n), &r).ok()) return 0;
    Check(h->coordinator->ValidateJob(admin, r.spec()).status(), "ValidateJob (JSON)");
  } else {
    llmc::v1::ListJobsRequest r;
    if (!r.ParseFromArray(body, static_cast<int>(n))) return 0;
    Check(h->coordinator->ListJobs(viewer, r).status(), "ListJobs");
  }
  return 0;
}
