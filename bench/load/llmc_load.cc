// llmc-load: a load test for a running llmc coordinator's public gRPC API (docs/service.md, "Load test").
//
// N client threads, each with its own connection, loop for a bounded time over
//   CreateJob (a new request_id: a data-free job on --model, output under --out-dir)
//   CreateJob again with the same request_id and spec, every --repeat-every jobs (must return the same job)
//   GetJob (must return that job)
//   ListJobs: two pages of its own jobs (label filter, --page-size), or one unfiltered page, alternately
//   WatchJob from seq 0 until the first event (must be seq 1, state QUEUED); then the client cancels it
// and record each call's latency. Then every created job is verified: listed once by ListJobs (label
// load-run=RUN, paged), found by GetJob, and re-creating it with its request_id returns the same id.
//
// Prints a table (and --json FILE) with calls, errors, calls/s and latency percentiles per RPC. Exit status 0
// only when no call failed, no job was lost and every idempotent re-create returned the same job.
#include <grpcpp/grpcpp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "llmc/v1/compression.grpc.pb.h"
#include "proto/channel.h"

namespace llmc::bench {
namespace {

namespace v1 = llmc::v1;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string server, token, token_file, model, out_dir, run_id, scheme = "W4A16", json_path;
  int clients = 200;
  double duration_s = 30;
  int connections = 0;  // 0: one per client
  int repeat_every = 5;
  int page_size = 10;
  int rpc_timeout_s = 60;
  int verify_threads = 8;
  double window_s = 5;  // width of the CreateJob/s timeline's windows
};

// The RPCs timed during the run, in report order.
enum Rpc { kCreate, kCreateRepeat, kGet, kList, kWatch, kRpcCount };
constexpr std::array<const char*, kRpcCount> kRpcNames = {"CreateJob", "CreateJob (repeat)", "GetJob",
                                                          "ListJobs", "WatchJob (first event)"};

// What one client thread saw. Only its thread writes it; merged after the threads are joined.
struct ClientStats {
  std::array<std::vector<double>, kRpcCount> latency_ms;
  std::array<int64_t, kRpcCount> errors{};
  std::vector<std::pair<std::string, std::string>> created;  // (request_id, job id), acknowledged creates
  std::vector<v1::CreateJobRequest> requests;                // for the final idempotency check
  std::vector<float> created_at_s;  // when each create was acknowledged, s after start
  int64_t mismatches = 0;           // a repeat/get/list/watch answer that contradicts what was created
  std::vector<std::string> error_samples;
};

void NoteError(ClientStats* st, const std::string& what) {
  if (st->error_samples.size() < 5 &&
      std::find(st->error_samples.begin(), st->error_samples.end(), what) == st->error_samples.end())
    st->error_samples.push_back(what);
}

// CPU seconds (user + system) this process has used so far.
double CpuSeconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

std::string CodeName(grpc::StatusCode c) {
  static const char* kNames[] = {
      "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
      "DATA_LOSS", "UNAUTHENTICATED"};
  int i = static_cast<int>(c);
  return i >= 0 && i < 17 ? kNames[i] : absl::StrCat("CODE_", i);
}

class LoadTest {
 public:
  LoadTest(Options o, std::string token) : o_(std::move(o)), token_(std::move(token)) {}

  // One channel per connection; GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL keeps channels from sharing a TCP
  // connection.
  std::shared_ptr<grpc::Channel> NewChannel(int index) const {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("llmc.load.channel", index);
    return grpc::CreateCustomChannel(o_.server, grpc::InsecureChannelCredentials(), args);
  }

  void Prepare(grpc::ClientContext* ctx) const {
    rpc::AddAuth(ctx, token_);
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(o_.rpc_timeout_s));
  }

  v1::CreateJobRequest MakeRequest(int client, int n) const {
    v1::CreateJobRequest r;
    r.set_request_id(absl::StrCat(o_.run_id, "-c", client, "-", n));
    auto* s = r.mutable_spec();
    s->set_model_uri(o_.model);
    s->set_output_uri(absl::StrCat(o_.out_dir, "/", o_.run_id, "/c", client, "-", n));
    s->mutable_preset()->set_scheme(o_.scheme);
    (*s->mutable_labels())["load-run"] = o_.run_id;
    (*s->mutable_labels())["client"] = std::to_string(client);
    return r;
  }

  // Times one unary call; records its latency or its error.
  template <typename Call>
  bool Timed(ClientStats* st, Rpc rpc, Call&& call) const {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    const auto t0 = Clock::now();
    grpc::Status s = call(&ctx);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (!s.ok()) {
      st->errors[rpc]++;
      NoteError(st, absl::StrCat(kRpcNames[rpc], ": ", CodeName(s.error_code()), ": ", s.error_message()));
      return false;
    }
    st->latency_ms[rpc].push_back(ms);
    return true;
  }

  void Mismatch(ClientStats* st, const std::string& what) const {
    st->mismatches++;
    NoteError(st, what);
  }

  void RunClient(int client, std::shared_ptr<grpc::Channel> channel, Clock::time_point start,
                 Clock::time_point end, ClientStats* st) const {
    auto stub = v1::Compression::NewStub(channel);
    for (int n = 0; Clock::now() < end; ++n) {
      v1::CreateJobRequest req = MakeRequest(client, n);
      v1::Job job;
      if (!Timed(st, kCreate, [&](grpc::ClientContext* c) { return stub->CreateJob(c, req, &job); })) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // no hot loop against a failing server
        continue;
      }
      st->created.emplace_back(req.request_id(), job.id());
      st->created_at_s.push_back(std::chrono::duration<float>(Clock::now() - start).count());
      st->requests.push_back(req);
      if (job.state() != v1::QUEUED && job.state() != v1::RUNNING && job.state() != v1::SUCCEEDED)
        Mismatch(st,
                 absl::StrCat("CreateJob ", req.request_id(), ": state ", v1::JobState_Name(job.state())));

      if (o_.repeat_every > 0 && n % o_.repeat_every == o_.repeat_every - 1) {
        v1::Job again;
        if (Timed(st, kCreateRepeat,
                  [&](grpc::ClientContext* c) { return stub->CreateJob(c, req, &again); }) &&
            again.id() != job.id())
          Mismatch(
              st, absl::StrCat("CreateJob repeat of ", req.request_id(), ": ", again.id(), " != ", job.id()));
      }

      v1::GetJobRequest g;
      g.set_id(job.id());
      v1::Job got;
      if (Timed(st, kGet, [&](grpc::ClientContext* c) { return stub->GetJob(c, g, &got); }) &&
          (got.id() != job.id() || got.request_id() != req.request_id()))
        Mismatch(st, absl::StrCat("GetJob ", job.id(), " returned ", got.id()));

      if (n % 2 == 0) {  // the client's own jobs, two pages: newest first, the new job on top, no overlap
        v1::ListJobsRequest l;
        l.set_page_size(o_.page_size);
        (*l.mutable_labels())["load-run"] = o_.run_id;
        (*l.mutable_labels())["client"] = std::to_string(client);
        v1::ListJobsResponse page1, page2;
        if (Timed(st, kList, [&](grpc::ClientContext* c) { return stub->ListJobs(c, l, &page1); })) {
          if (page1.jobs_size() == 0 || page1.jobs(0).id() != job.id())
            Mismatch(st, absl::StrCat("ListJobs (client ", client, "): newest is not ", job.id()));
          if (!page1.next_page_token().empty()) {
            l.set_page_token(page1.next_page_token());
            if (Timed(st, kList, [&](grpc::ClientContext* c) { return stub->ListJobs(c, l, &page2); })) {
              std::set<std::string> seen;
              for (const auto& j : page1.jobs()) seen.insert(j.id());
              for (const auto& j : page2.jobs())
                if (!seen.insert(j.id()).second)
                  Mismatch(st, absl::StrCat("ListJobs: ", j.id(), " on two pages"));
            }
          }
        }
      } else {  // everyone's newest jobs
        v1::ListJobsRequest l;
        v1::ListJobsResponse page;
        Timed(st, kList, [&](grpc::ClientContext* c) { return stub->ListJobs(c, l, &page); });
      }

      Watch(stub.get(), job.id(), st);
    }
  }

  // Opens a WatchJob stream from seq 0, times the first event, then cancels the stream.
  void Watch(v1::Compression::Stub* stub, const std::string& id, ClientStats* st) const {
    grpc::ClientContext ctx;
    Prepare(&ctx);
    v1::WatchJobRequest w;
    w.set_id(id);
    const auto t0 = Clock::now();
    auto reader = stub->WatchJob(&ctx, w);
    v1::JobEvent e;
    const bool got = reader->Read(&e);
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (got) {
      if (e.seq() != 1 || e.type() != "state" || e.state() != v1::QUEUED)
        Mismatch(st, absl::StrCat("WatchJob ", id, ": first event seq ", e.seq(), " ", e.type()));
      ctx.TryCancel();
      while (reader->Read(&e)) {
      }
    }
    grpc::Status s = reader->Finish();
    if (!got || (!s.ok() && s.error_code() != grpc::StatusCode::CANCELLED)) {
      st->errors[kWatch]++;
      NoteError(st, absl::StrCat("WatchJob: ", got ? "" : "no event; ", CodeName(s.error_code()), ": ",
                                 s.error_message()));
      return;
    }
    st->latency_ms[kWatch].push_back(ms);
  }

  struct Verify {
    int64_t created = 0, distinct_ids = 0, listed = 0, list_duplicates = 0, missing_from_list = 0,
            unexpected_in_list = 0, get_ok = 0, get_lost = 0, get_errors = 0, recreate_same = 0,
            recreate_different = 0, recreate_errors = 0, list_errors = 0;
    std::map<std::string, int64_t> states;
    std::vector<std::string> samples;
    int64_t Lost() const { return missing_from_list + get_lost; }
    int64_t Errors() const { return get_errors + recreate_errors + list_errors; }
  };

  // Checks every acknowledged create: listed exactly once, found by GetJob, and idempotent.
  Verify VerifyJobs(const std::vector<ClientStats>& stats) const {
    Verify v;
    std::map<std::string, std::string> id_of;  // request_id -> id
    std::vector<const v1::CreateJobRequest*> reqs;
    std::set<std::string> ids;
    for (const auto& st : stats) {
      for (const auto& [rid, id] : st.created) {
        id_of[rid] = id;
        ids.insert(id);
      }
      for (const auto& r : st.requests) reqs.push_back(&r);
    }
    v.created = static_cast<int64_t>(id_of.size());
    v.distinct_ids = static_cast<int64_t>(ids.size());
    std::mutex mu;
    auto sample = [&](const std::string& s) {
      std::lock_guard<std::mutex> l(mu);
      if (v.samples.size() < 5) v.samples.push_back(s);
    };

    // ListJobs over every page of this run's jobs.
    auto stub = v1::Compression::NewStub(NewChannel(-1));
    std::set<std::string> listed;
    v1::ListJobsRequest l;
    l.set_page_size(1000);
    (*l.mutable_labels())["load-run"] = o_.run_id;
    while (true) {
      grpc::ClientContext ctx;
      Prepare(&ctx);
      v1::ListJobsResponse page;
      grpc::Status s = stub->ListJobs(&ctx, l, &page);
      if (!s.ok()) {
        v.list_errors++;
        sample(absl::StrCat("verify ListJobs: ", CodeName(s.error_code()), ": ", s.error_message()));
        break;
      }
      for (const auto& j : page.jobs()) {
        if (!listed.insert(j.id()).second) v.list_duplicates++;
        v.states[v1::JobState_Name(j.state())]++;
        if (!ids.count(j.id())) v.unexpected_in_list++;
      }
      if (page.next_page_token().empty()) break;
      l.set_page_token(page.next_page_token());
    }
    v.listed = static_cast<int64_t>(listed.size());
    for (const auto& id : ids)
      if (!listed.count(id)) {
        v.missing_from_list++;
        sample(absl::StrCat("not listed: ", id));
      }

    // GetJob and an idempotent re-create of every job, from a few threads.
    std::atomic<size_t> next{0};
    std::atomic<int64_t> get_ok{0}, get_lost{0}, get_errors{0}, same{0}, different{0}, re_errors{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < std::max(1, o_.verify_threads); ++t) {
      threads.emplace_back([&, t] {
        auto s = v1::Compression::NewStub(NewChannel(-2 - t));
        for (size_t i; (i = next++) < reqs.size();) {
          const v1::CreateJobRequest& req = *reqs[i];
          const std::string& id = id_of.at(req.request_id());
          grpc::ClientContext gc;
          Prepare(&gc);
          v1::GetJobRequest g;
          g.set_id(id);
          v1::Job job;
          grpc::Status st = s->GetJob(&gc, g, &job);
          if (st.ok() && job.id() == id && job.request_id() == req.request_id()) {
            get_ok++;
          } else if (st.error_code() == grpc::StatusCode::NOT_FOUND || st.ok()) {
            get_lost++;
            sample(absl::StrCat("GetJob ", id, ": ", st.ok() ? "another job" : st.error_message()));
          } else {
            get_errors++;
            sample(absl::StrCat("verify GetJob: ", CodeName(st.error_code()), ": ", st.error_message()));
          }
          grpc::ClientContext cc;
          Prepare(&cc);
          v1::Job again;
          st = s->CreateJob(&cc, req, &again);
          if (!st.ok()) {
            re_errors++;
            sample(absl::StrCat("verify re-create: ", CodeName(st.error_code()), ": ", st.error_message()));
          } else if (again.id() == id) {
            same++;
          } else {
            different++;
            sample(absl::StrCat("re-create of ", req.request_id(), " made ", again.id(), " (had ", id, ")"));
          }
        }
      });
    }
    for (auto& t : threads) t.join();
    v.get_ok = get_ok;
    v.get_lost = get_lost;
    v.get_errors = get_errors;
    v.recreate_same = same;
    v.recreate_different = different;
    v.recreate_errors = re_errors;
    return v;
  }

  int Run() {
    std::error_code ec;
    fs::create_directories(fs::path(o_.out_dir) / o_.run_id,
                           ec);  // loopback: the server's file system is ours
    const int connections = o_.connections > 0 ? o_.connections : o_.clients;
    std::vector<std::shared_ptr<grpc::Channel>> channels;
    for (int i = 0; i < connections; ++i) channels.push_back(NewChannel(i));
    for (auto& ch : channels)  // connect before the clock starts
      if (!ch->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
        std::fprintf(stderr,
                     "llmc-load: error: cannot connect to %s; start the coordinator (llmc serve) first\n",
                     o_.server.c_str());
        return 2;
      }
    std::vector<ClientStats> stats(o_.clients);
    std::vector<std::thread> threads;
    const double cpu0 = CpuSeconds();
    const auto t0 = Clock::now();
    const auto end = t0 + std::chrono::microseconds(static_cast<int64_t>(o_.duration_s * 1e6));
    for (int i = 0; i < o_.clients; ++i)
      threads.emplace_back([&, i] { RunClient(i, channels[i % connections], t0, end, &stats[i]); });
    for (auto& t : threads) t.join();
    const double wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
    client_cpu_s_ = CpuSeconds() - cpu0;
    const auto v0 = Clock::now();
    Verify v = VerifyJobs(stats);
    const double verify_s = std::chrono::duration<double>(Clock::now() - v0).count();
    return Report(stats, wall_s, v, verify_s);
  }

  // Nearest-rank percentile of sorted values: the smallest value with at least p of the samples at or below
  // it.
  static double Percentile(const std::vector<double>& sorted, double p) {
    if (sorted.empty()) return 0;
    size_t rank = static_cast<size_t>(std::ceil(p * sorted.size()));
    return sorted[std::min(sorted.size(), std::max<size_t>(rank, 1)) - 1];
  }

  int Report(const std::vector<ClientStats>& stats, double wall_s, const Verify& v, double verify_s) const {
    nlohmann::json j;
    j["server"] = o_.server;
    j["run_id"] = o_.run_id;
    j["clients"] = o_.clients;
    j["connections"] = o_.connections > 0 ? o_.connections : o_.clients;
    j["duration_s"] = o_.duration_s;
    j["wall_s"] = wall_s;
    j["scheme"] = o_.scheme;
    int64_t errors = 0, mismatches = 0;
    std::vector<std::string> samples;
    for (const auto& st : stats) {
      mismatches += st.mismatches;
      for (const auto& s : st.error_samples)
        if (samples.size() < 10 && std::find(samples.begin(), samples.end(), s) == samples.end())
          samples.push_back(s);
    }
    std::printf("llmc-load: %d clients (%d connections) x %.0f s against %s, run %s\n", o_.clients,
                j["connections"].get<int>(), o_.duration_s, o_.server.c_str(), o_.run_id.c_str());
    std::printf("%-24s %9s %7s %9s %9s %9s %9s %9s\n", "rpc", "calls", "errors", "calls/s", "p50 ms",
                "p90 ms", "p99 ms", "max ms");
    int64_t total_calls = 0;
    for (int r = 0; r < kRpcCount; ++r) {
      std::vector<double> all;
      int64_t err = 0;
      for (const auto& st : stats) {
        all.insert(all.end(), st.latency_ms[r].begin(), st.latency_ms[r].end());
        err += st.errors[r];
      }
      std::sort(all.begin(), all.end());
      const int64_t calls = static_cast<int64_t>(all.size()) + err;
      total_calls += calls;
      errors += err;
      double mean = 0;
      for (double x : all) mean += x;
      if (!all.empty()) mean /= all.size();
      nlohmann::json e = {{"calls", calls},
                          {"errors", err},
                          {"calls_per_s", calls / wall_s},
                          {"p50_ms", Percentile(all, 0.50)},
                          {"p90_ms", Percentile(all, 0.90)},
                          {"p99_ms", Percentile(all, 0.99)},
                          {"max_ms", all.empty() ? 0.0 : all.back()},
                          {"mean_ms", mean}};
      j["rpcs"][kRpcNames[r]] = e;
      std::printf("%-24s %9lld %7lld %9.1f %9.2f %9.2f %9.2f %9.2f\n", kRpcNames[r],
                  static_cast<long long>(calls), static_cast<long long>(err), calls / wall_s,
                  e["p50_ms"].get<double>(), e["p90_ms"].get<double>(), e["p99_ms"].get<double>(),
                  e["max_ms"].get<double>());
    }
    std::printf("%-24s %9lld %7lld %9.1f\n", "all", static_cast<long long>(total_calls),
                static_cast<long long>(errors), total_calls / wall_s);
    std::string states;
    for (const auto& [s, n] : v.states) absl::StrAppend(&states, states.empty() ? "" : ", ", s, " ", n);
    std::printf("jobs created: %lld (%.1f/s); at the end: %s\n", static_cast<long long>(v.created),
                v.created / wall_s, states.c_str());
    std::printf(
        "verified in %.1f s: listed %lld (duplicates %lld, unexpected %lld), GetJob found %lld, "
        "re-create returned the same job %lld\n",
        verify_s, static_cast<long long>(v.listed), static_cast<long long>(v.list_duplicates),
        static_cast<long long>(v.unexpected_in_list), static_cast<long long>(v.get_ok),
        static_cast<long long>(v.recreate_same));
    const int64_t lost = v.Lost() + (v.created - v.distinct_ids);
    const int64_t violations = v.recreate_different + mismatches + v.list_duplicates + v.unexpected_in_list;
    const int64_t all_errors = errors + v.Errors();
    std::printf("errors %lld, lost jobs %lld, inconsistent answers %lld\n",
                static_cast<long long>(all_errors), static_cast<long long>(lost),
                static_cast<long long>(violations));
    for (const auto& s : samples) std::printf("  e.g. %s\n", s.c_str());
    for (const auto& s : v.samples) std::printf("  e.g. %s\n", s.c_str());
    j["jobs_created"] = v.created;
    j["jobs_created_per_s"] = v.created / wall_s;
    j["calls_total"] = total_calls;
    j["calls_per_s"] = total_calls / wall_s;
    j["client_cpu_s"] = client_cpu_s_;
    // Acknowledged creates per second in consecutive windows of the run: shows whether throughput holds as
    // the store fills. The last window also takes the calls that ended after the last full window.
    std::vector<double> timeline(std::max<size_t>(1, static_cast<size_t>(wall_s / o_.window_s)), 0.0);
    for (const auto& st : stats)
      for (float t : st.created_at_s)
        timeline[std::min(timeline.size() - 1, static_cast<size_t>(t / o_.window_s))] += 1;
    std::string line;
    for (size_t w = 0; w < timeline.size(); ++w) {
      const double width = w + 1 == timeline.size() ? wall_s - w * o_.window_s : o_.window_s;
      timeline[w] /= width;
      absl::StrAppend(&line, " ", absl::StrFormat("%.0f", timeline[w]));
    }
    j["creates_per_s_by_window"] = timeline;
    j["window_s"] = o_.window_s;
    std::printf("CreateJob/s in %.0f-s windows:%s\n", o_.window_s, line.c_str());
    std::printf("llmc-load itself used %.1f CPU s in the %.1f s run (%.2f cores)\n", client_cpu_s_, wall_s,
                client_cpu_s_ / wall_s);
    j["states_at_end"] = v.states;
    j["verify"] = {{"seconds", verify_s},
                   {"listed", v.listed},
                   {"list_duplicates", v.list_duplicates},
                   {"unexpected_in_list", v.unexpected_in_list},
                   {"missing_from_list", v.missing_from_list},
                   {"get_found", v.get_ok},
                   {"get_lost", v.get_lost},
                   {"recreate_same_id", v.recreate_same},
                   {"recreate_other_id", v.recreate_different}};
    j["errors"] = all_errors;
    j["lost_jobs"] = lost;
    j["inconsistent_answers"] = violations;
    const bool ok = all_errors == 0 && lost == 0 && violations == 0;
    j["ok"] = ok;
    if (!o_.json_path.empty()) {
      std::ofstream out(o_.json_path);
      out << j.dump(2) << "\n";
      if (!out) std::fprintf(stderr, "llmc-load: cannot write --json %s\n", o_.json_path.c_str());
    }
    std::printf("%s\n", ok ? "PASS: no errors, no lost jobs" : "FAIL");
    return ok ? 0 : 1;
  }

 private:
  Options o_;
  std::string token_;
  double client_cpu_s_ = 0;  // this process's CPU time during the run phase
};

}  // namespace
}  // namespace llmc::bench

int main(int argc, char** argv) {
  llmc::bench::Options o;
  CLI::App app{
      "Load-test a running llmc coordinator: concurrent clients creating, getting, listing and watching "
      "jobs for a bounded time; reports calls/s and latency percentiles and checks that no job was lost"};
  app.add_option("--server", o.server,
                 "coordinator gRPC address (default $LLMC_SERVER, else 127.0.0.1:7443)");
  app.add_option("--token", o.token, "bearer token with the submitter or admin role (default $LLMC_TOKEN)");
  app.add_option("--token-file", o.token_file, "read the token from this file (e.g. DATA_DIR/admin.token)");
  app.add_option("--model", o.model, "absolute path of the model directory the jobs compress")->required();
  app.add_option("--out-dir", o.out_dir,
                 "absolute directory under an allowed root; outputs go to OUT_DIR/RUN/...")
      ->required();
  app.add_option("--clients", o.clients, "concurrent clients (threads)")->capture_default_str();
  app.add_option("--duration", o.duration_s, "seconds to run")->capture_default_str();
  app.add_option("--connections", o.connections, "TCP connections shared by the clients (0: one per client)")
      ->capture_default_str();
  app.add_option("--scheme", o.scheme, "data-free scheme of the jobs")->capture_default_str();
  app.add_option("--repeat-every", o.repeat_every, "re-create every Nth job with its request_id (0: never)")
      ->capture_default_str();
  app.add_option("--page-size", o.page_size, "ListJobs page size for the per-client listing")
      ->capture_default_str();
  app.add_option("--rpc-timeout", o.rpc_timeout_s, "deadline of each call, seconds")->capture_default_str();
  app.add_option("--run-id", o.run_id,
                 "label and request_id prefix of this run's jobs (default: load-PID-TIME)");
  app.add_option("--window", o.window_s, "seconds per window of the CreateJob/s timeline")
      ->capture_default_str();
  app.add_option("--json", o.json_path, "also write the report as JSON to this file");
  CLI11_PARSE(app, argc, argv);
  if (o.clients < 1 || o.duration_s <= 0 || o.window_s <= 0) {
    std::fprintf(stderr, "llmc-load: error: --clients, --duration and --window must be positive\n");
    return 2;
  }
  o.server = llmc::rpc::ResolveServer(o.server);
  std::string token = llmc::rpc::ResolveToken(o.token);
  if (!o.token_file.empty()) {
    std::ifstream in(o.token_file);
    if (!(in >> token)) {
      std::fprintf(stderr, "llmc-load: error: --token-file %s: cannot read a token\n", o.token_file.c_str());
      return 2;
    }
  }
  if (o.run_id.empty())
    o.run_id = absl::StrFormat("load-%d-%d", static_cast<int>(getpid()),
                               static_cast<int>(std::chrono::duration_cast<std::chrono::seconds>(
                                                    std::chrono::system_clock::now().time_since_epoch())
                                                    .count() %
                                                100000));
  llmc::bench::LoadTest t(o, token);
  return t.Run();
}
