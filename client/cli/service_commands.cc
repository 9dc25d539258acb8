#include "client/cli/service_commands.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "client/cli/cli_errors.h"
#include "proto/channel.h"
#include "common/signals.h"

namespace llmc::cli {

namespace fs = std::filesystem;
namespace v1 = llmc::v1;
using rpc::AddAuth;
using rpc::FromGrpc;

struct ServiceCommands {
  // Shared by the client subcommands.
  std::string server, token, ca_cert;
  bool json = false;
  // submit
  CLI::App *submit = nullptr, *get = nullptr, *list = nullptr, *watch = nullptr, *cancel = nullptr, *serve = nullptr;
  CLI::Option* ignore_opt = nullptr;
  std::string model, output, scheme, algorithm, recipe, dataset, request_id, max_shard_size, observer, eval_text;
  std::string calib_activations;
  std::string precision;
  std::string moe_calibrate_all_experts;  // "", "true" or "false"
  int num_samples = 0, seq_len = 0, gpus = 0, min_gpus = 0, priority = 0;
  uint64_t seed = 0;
  std::vector<std::string> labels, ignore;
  bool then_watch = false, no_progress = false;
  // get, watch, cancel
  std::string id;
  int64_t from_seq = 0;
  // list
  std::string state;
  int page_size = 0;
  bool all_pages = false;
  // serve
  std::string data_dir = "llmc-data", host = "127.0.0.1";
  int port = 7443, http_port = 7480, workers = 1, threads = 0, comm_timeout = 0;
  std::vector<std::string> roots, input_roots;
  bool no_cwd_root = false;
  int64_t max_num_samples = 0, max_seq_len = 0, max_calibration_tokens = 0;  // 0: llmc-server's defaults
  std::string device;
  // Forwarded to llmc-server as they are (docs/service.md, "Tenants: roots and quotas").
  bool tenant_roots = false;
  std::vector<std::string> shared_roots, shared_input_roots;
  int64_t tenant_max_active_jobs = 0, tenant_max_gpus = 0, tenant_max_spec_bytes = 0;  // 0: no quota
  int64_t lease_ms = 0, max_attempts = 0;                                              // 0: llmc-server's defaults
  std::string web_dir;        // the console's folder ("": llmc-server's default beside the binary)
  bool metrics_auth = false;  // a token on /metrics too
  int http_max_connections = 0, http_max_connections_per_client = 0;  // 0: llmc-server's defaults
};

namespace {

std::string ToJson(const google::protobuf::Message& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.always_print_primitive_fields = true;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  return out;
}

// A path (made absolute here, since the server does not share our working directory) or a URI as given.
std::string AsUri(const std::string& s) {
  if (s.empty() || absl::StrContains(s, "://")) return s;
  return fs::absolute(fs::path(s)).lexically_normal().string();
}

std::string NewRequestId() {
  std::random_device rd;
  std::mt19937_64 g((static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(getpid()));
  return absl::StrFormat("%016x%016x", g(), g());
}

absl::Status ParseLabels(const std::vector<std::string>& in, google::protobuf::Map<std::string, std::string>* out) {
  for (const auto& l : in) {
    auto eq = l.find('=');
    if (eq == std::string::npos || eq == 0)
      return absl::InvalidArgumentError(absl::StrCat("--label ", l, ": give KEY=VALUE"));
    (*out)[l.substr(0, eq)] = l.substr(eq + 1);
  }
  return absl::OkStatus();
}

std::unique_ptr<v1::Compression::Stub> Stub(const ServiceCommands& c) {
  return v1::Compression::NewStub(rpc::MakeChannel(c.server, c.ca_cert));
}

void Deadline(grpc::ClientContext* ctx, int seconds) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
}

const char* StateText(v1::JobState s) { return v1::JobState_Name(s).c_str(); }

std::string FormatMs(int64_t ms) {
  if (ms <= 0) return "-";
  time_t t = ms / 1000;
  struct tm tm;
  localtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}

void PrintJob(const v1::Job& j) {
  std::cout << absl::StrFormat("job       %s\nstate     %s\n", j.id(), StateText(j.state()));
  std::cout << absl::StrFormat("model     %s\noutput    %s\n", j.spec().model_uri(), j.spec().output_uri());
  if (j.spec().has_preset())
    std::cout << absl::StrFormat("method    %s %s\n", j.spec().preset().scheme(),
                                 j.spec().preset().algorithm().empty() ? "rtn" : j.spec().preset().algorithm());
  else
    std::cout << "method    recipe\n";
  const auto& p = j.progress();
  std::cout << absl::StrFormat("progress  %.1f%%  %s  blocks %d/%d  modules %d/%d\n", p.fraction() * 100, p.stage(),
                               p.blocks_done(), p.blocks_total(), p.modules_done(), p.modules_total());
  std::cout << absl::StrFormat("attempts  %d (resume point: block %d)\n", j.attempts(), j.finished_blocks());
  std::cout << absl::StrFormat("created   %s\nstarted   %s\nended     %s\n", FormatMs(j.create_time_ms()),
                               FormatMs(j.start_time_ms()), FormatMs(j.end_time_ms()));
  if (!j.message().empty()) std::cout << "message   " << j.message() << "\n";
  if (!j.error().empty()) std::cout << "error     " << j.error() << "\n";
}

void DrawBar(const v1::JobEvent& e, bool tty) {
  const auto& p = e.progress();
  if (!tty) return;
  const int width = 30;
  int filled = static_cast<int>(p.fraction() * width);
  filled = std::max(0, std::min(width, filled));
  std::string bar(filled, '#');
  bar.append(width - filled, '.');
  std::fprintf(stderr, "\r[%s] %5.1f%%  %-26.26s blocks %d/%d  modules %d/%d ", bar.c_str(), p.fraction() * 100,
               p.stage().c_str(), p.blocks_done(), p.blocks_total(), p.modules_done(), p.modules_total());
  std::fflush(stderr);
}

int Watch(const ServiceCommands& c, const std::string& id, int64_t from_seq) {
  auto stub = Stub(c);
  const std::string token = rpc::ResolveToken(c.token);
  const bool tty = isatty(STDERR_FILENO) && !c.no_progress && !c.json;
  int64_t seq = from_seq;
  int failures = 0;
  bool bar_drawn = false;
  while (true) {
    grpc::ClientContext ctx;
    AddAuth(&ctx, token);
    v1::WatchJobRequest req;
    req.set_id(id);
    req.set_from_seq(seq);
    auto reader = stub->WatchJob(&ctx, req);
    v1::JobEvent e;
    bool got = false;
    while (reader->Read(&e)) {
      got = true;
      seq = e.seq();
      if (c.json) {
        std::cout << ToJson(e) << std::endl;
      } else if (e.type() == "progress" || e.type() == "block") {
        DrawBar(e, tty);
        bar_drawn = tty;
      } else {
        if (bar_drawn) std::fprintf(stderr, "\n");
        bar_drawn = false;
        std::fprintf(stderr, "%s  %s  %s\n", FormatMs(e.time_ms()).c_str(), StateText(e.state()), e.message().c_str());
      }
    }
    grpc::Status st = reader->Finish();
    if (st.ok()) break;
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE && st.error_code() != grpc::StatusCode::CANCELLED &&
        st.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED && st.error_code() != grpc::StatusCode::INTERNAL) {
      if (bar_drawn) std::fprintf(stderr, "\n");
      return Fail(FromGrpc(st));
    }
    // The coordinator went away (restart): resume from the last seq seen.
    failures = got ? 1 : failures + 1;
    if (failures > 120) {
      if (bar_drawn) std::fprintf(stderr, "\n");
      return Fail(absl::UnavailableError(absl::StrCat("lost the coordinator at ", rpc::ResolveServer(c.server),
                                                      ": ", st.error_message(), "; watch again with --from-seq ", seq)));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(1000, 100 * failures)));
  }
  if (bar_drawn) std::fprintf(stderr, "\n");
  grpc::ClientContext ctx;
  AddAuth(&ctx, token);
  Deadline(&ctx, 30);
  v1::GetJobRequest g;
  g.set_id(id);
  v1::Job job;
  grpc::Status st = stub->GetJob(&ctx, g, &job);
  if (!st.ok()) return Fail(FromGrpc(st));
  if (!c.json) {
    std::fprintf(stderr, "job %s %s%s%s\n", job.id().c_str(), StateText(job.state()), job.error().empty() ? "" : ": ",
                 job.error().c_str());
  }
  return job.state() == v1::SUCCEEDED ? 0 : 1;
}

int Submit(const ServiceCommands& c) {
  v1::CreateJobRequest req;
  req.set_request_id(c.request_id.empty() ? NewRequestId() : c.request_id);
  v1::JobSpec* s = req.mutable_spec();
  s->set_model_uri(AsUri(c.model));
  s->set_output_uri(AsUri(c.output));
  if (c.scheme.empty() == c.recipe.empty())
    return Fail(absl::InvalidArgumentError("give exactly one of --scheme NAME or --recipe FILE (see `llmc schemes`)"));
  if (!c.scheme.empty()) {
    s->mutable_preset()->set_scheme(c.scheme);
    s->mutable_preset()->set_algorithm(c.algorithm);
  } else {
    std::ifstream in(c.recipe);
    if (!in) return Fail(absl::NotFoundError(absl::StrCat(c.recipe, ": cannot read the recipe file")));
    std::stringstream ss;
    ss << in.rdbuf();
    s->set_recipe_yaml(ss.str());
    if (!c.algorithm.empty() && c.algorithm != "rtn")
      return Fail(absl::InvalidArgumentError("--algorithm goes with --scheme; a --recipe names its modifiers itself"));
  }
  for (const auto& i : c.ignore) s->add_ignore(i);
  if (!c.dataset.empty()) s->mutable_calibration()->set_dataset_uri(AsUri(c.dataset));
  s->mutable_calibration()->set_num_samples(c.num_samples);
  s->mutable_calibration()->set_seq_len(c.seq_len);
  s->mutable_calibration()->set_seed(c.seed);
  if (!c.eval_text.empty()) s->set_eval_text_uri(AsUri(c.eval_text));
  s->set_gpus(c.gpus);
  s->set_min_gpus(c.min_gpus);
  s->set_priority(c.priority);
  s->set_max_shard_size(c.max_shard_size);
  s->set_observer(c.observer);
  s->set_calibration_activations(c.calib_activations);
  s->set_precision(c.precision);
  if (!c.moe_calibrate_all_experts.empty()) {
    if (c.moe_calibrate_all_experts != "true" && c.moe_calibrate_all_experts != "false")
      return Fail(absl::InvalidArgumentError(absl::StrCat("--moe-calibrate-all-experts '", c.moe_calibrate_all_experts,
                                                          "': use true or false")));
    s->mutable_moe_calibrate_all_experts()->set_value(c.moe_calibrate_all_experts == "true");
  }
  if (auto st = ParseLabels(c.labels, s->mutable_labels()); !st.ok()) return Fail(st);
  auto stub = Stub(c);
  v1::Job job;
  // Retried on UNAVAILABLE with the same request id: the create is idempotent.
  grpc::Status st;
  for (int attempt = 0; attempt < 5; ++attempt) {
    grpc::ClientContext ctx;
    AddAuth(&ctx, rpc::ResolveToken(c.token));
    Deadline(&ctx, 60);
    st = stub->CreateJob(&ctx, req, &job);
    if (st.error_code() != grpc::StatusCode::UNAVAILABLE) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(300 << attempt));
  }
  if (!st.ok()) return Fail(FromGrpc(st));
  if (c.json) std::cout << ToJson(job) << std::endl;
  else std::cout << "submitted " << job.id() << " (" << StateText(job.state()) << ")" << std::endl;
  if (c.then_watch) return Watch(c, job.id(), 0);
  return 0;
}

int Get(const ServiceCommands& c) {
  auto stub = Stub(c);
  grpc::ClientContext ctx;
  AddAuth(&ctx, rpc::ResolveToken(c.token));
  Deadline(&ctx, 30);
  v1::GetJobRequest r;
  r.set_id(c.id);
  v1::Job job;
  grpc::Status st = stub->GetJob(&ctx, r, &job);
  if (!st.ok()) return Fail(FromGrpc(st));
  if (c.json) std::cout << ToJson(job) << std::endl;
  else PrintJob(job);
  return 0;
}

int List(const ServiceCommands& c) {
  auto stub = Stub(c);
  v1::ListJobsRequest r;
  if (!c.state.empty()) {
    v1::JobState s;
    if (!v1::JobState_Parse(c.state, &s))
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--state ", c.state, ": use QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED or RETRYING")));
    r.set_state(s);
  }
  if (auto st = ParseLabels(c.labels, r.mutable_labels()); !st.ok()) return Fail(st);
  r.set_page_size(c.page_size);
  v1::ListJobsResponse all;
  while (true) {
    grpc::ClientContext ctx;
    AddAuth(&ctx, rpc::ResolveToken(c.token));
    Deadline(&ctx, 30);
    v1::ListJobsResponse page;
    grpc::Status st = stub->ListJobs(&ctx, r, &page);
    if (!st.ok()) return Fail(FromGrpc(st));
    for (auto& j : *page.mutable_jobs()) *all.add_jobs() = std::move(j);
    all.set_next_page_token(page.next_page_token());
    if (!c.all_pages || page.next_page_token().empty()) break;
    r.set_page_token(page.next_page_token());
  }
  if (c.json) {
    std::cout << ToJson(all) << std::endl;
    return 0;
  }
  std::cout << absl::StrFormat("%-22s %-10s %6s  %-19s  %s\n", "ID", "STATE", "DONE", "CREATED", "OUTPUT");
  for (const auto& j : all.jobs())
    std::cout << absl::StrFormat("%-22s %-10s %5.1f%%  %-19s  %s\n", j.id(), StateText(j.state()),
                                 j.progress().fraction() * 100, FormatMs(j.create_time_ms()), j.spec().output_uri());
  if (!all.next_page_token().empty()) std::cout << "(more: --all)\n";
  return 0;
}

int Cancel(const ServiceCommands& c) {
  auto stub = Stub(c);
  grpc::ClientContext ctx;
  AddAuth(&ctx, rpc::ResolveToken(c.token));
  Deadline(&ctx, 30);
  v1::CancelJobRequest r;
  r.set_id(c.id);
  v1::Job job;
  grpc::Status st = stub->CancelJob(&ctx, r, &job);
  if (!st.ok()) return Fail(FromGrpc(st));
  if (c.json) std::cout << ToJson(job) << std::endl;
  else std::cout << job.id() << " " << StateText(job.state()) << std::endl;
  return 0;
}

// ---- llmc serve ----

// The GPU local cuda worker `index` runs on (CUDA_VISIBLE_DEVICES for it): the workers take the visible GPUs
// round-robin (CUDA_VISIBLE_DEVICES's entries, else the driver's GPUs); "" when no GPU is known here.
std::string WorkerGpu(int index) {
  std::vector<std::string> gpus;
  if (const char* env = std::getenv("CUDA_VISIBLE_DEVICES"); env && *env) {
    gpus = absl::StrSplit(env, ',', absl::SkipWhitespace());
  } else {
    std::error_code ec;
    int n = 0;
    for (auto it = fs::directory_iterator("/proc/driver/nvidia/gpus", ec); !ec && it != fs::directory_iterator();
         it.increment(ec))
      ++n;
    for (int i = 0; i < n; ++i) gpus.push_back(absl::StrCat(i));
  }
  return gpus.empty() ? std::string() : gpus[index % gpus.size()];
}

pid_t Spawn(const std::vector<std::string>& argv, const std::string& cuda_visible_devices = "") {
  pid_t pid = fork();
  if (pid != 0) return pid;
  if (!cuda_visible_devices.empty()) {
    setenv("CUDA_VISIBLE_DEVICES", cuda_visible_devices.c_str(), 1);
    // Indices in PCI order, as NVML counts them: the worker's heartbeats sample the same GPU it computes on.
    setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID", /*overwrite=*/0);
  }
  prctl(PR_SET_PDEATHSIG, SIGTERM);  // children go when `llmc serve` goes, even on kill -9
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  execv(args[0], args.data());
  std::fprintf(stderr, "llmc serve: cannot run %s: %s\n", args[0], strerror(errno));
  _exit(127);
}

int Serve(const ServiceCommands& c) {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  const fs::path bin = self.parent_path();
  const std::string server_bin = (bin / "llmc-server").string(), worker_bin = (bin / "llmc-worker").string();
  for (const auto& b : {server_bin, worker_bin})
    if (access(b.c_str(), X_OK) != 0)
      return Fail(absl::NotFoundError(absl::StrCat(b, ": not found beside ", self.string(),
                                                   "; build the llmc-server and llmc-worker targets")));
  fs::create_directories(c.data_dir, ec);
  if (ec) return Fail(absl::PermissionDeniedError(absl::StrCat("--data-dir ", c.data_dir, ": ", ec.message())));
  const std::string data_dir = fs::canonical(c.data_dir).string();
  const std::string ready = data_dir + "/serve.ready";
  fs::remove(ready, ec);

  sigset_t set = BlockTerminationSignals({SIGCHLD});

  int grpc_port = c.port, http_port = c.http_port;
  auto server_argv = [&] {
    std::vector<std::string> a = {server_bin, "--data-dir", data_dir,
                                  "--listen", absl::StrCat(c.host, ":", grpc_port),
                                  "--http-listen", absl::StrCat(c.host, ":", http_port), "--ready-file", ready};
    if (!c.no_cwd_root) a.insert(a.end(), {"--allowed-root", fs::current_path().string()});
    for (const auto& r : c.roots) a.insert(a.end(), {"--allowed-root", AsUri(r)});
    for (const auto& r : c.input_roots) a.insert(a.end(), {"--allowed-input-root", AsUri(r)});
    if (c.max_num_samples > 0) a.insert(a.end(), {"--max-num-samples", absl::StrCat(c.max_num_samples)});
    if (c.max_seq_len > 0) a.insert(a.end(), {"--max-seq-len", absl::StrCat(c.max_seq_len)});
    if (c.max_calibration_tokens > 0)
      a.insert(a.end(), {"--max-calibration-tokens", absl::StrCat(c.max_calibration_tokens)});
    if (c.tenant_roots) a.push_back("--tenant-roots");
    for (const auto& r : c.shared_roots) a.insert(a.end(), {"--shared-root", AsUri(r)});
    for (const auto& r : c.shared_input_roots) a.insert(a.end(), {"--shared-input-root", AsUri(r)});
    if (c.tenant_max_active_jobs > 0)
      a.insert(a.end(), {"--tenant-max-active-jobs", absl::StrCat(c.tenant_max_active_jobs)});
    if (c.tenant_max_gpus > 0) a.insert(a.end(), {"--tenant-max-gpus", absl::StrCat(c.tenant_max_gpus)});
    if (c.tenant_max_spec_bytes > 0)
      a.insert(a.end(), {"--tenant-max-spec-bytes", absl::StrCat(c.tenant_max_spec_bytes)});
    if (c.lease_ms > 0) a.insert(a.end(), {"--lease-ms", absl::StrCat(c.lease_ms)});
    if (c.max_attempts > 0) a.insert(a.end(), {"--max-attempts", absl::StrCat(c.max_attempts)});
    if (!c.web_dir.empty()) a.insert(a.end(), {"--web-dir", fs::absolute(c.web_dir).string()});
    if (c.metrics_auth) a.push_back("--metrics-auth");
    if (c.http_max_connections > 0)
      a.insert(a.end(), {"--http-max-connections", absl::StrCat(c.http_max_connections)});
    if (c.http_max_connections_per_client > 0)
      a.insert(a.end(), {"--http-max-connections-per-client", absl::StrCat(c.http_max_connections_per_client)});
    return a;
  };
  pid_t server = Spawn(server_argv());
  // Wait until the coordinator serves (it writes the ready file with its ports).
  for (int i = 0; i < 300 && !fs::exists(ready); ++i) {
    int status;
    if (waitpid(server, &status, WNOHANG) == server)
      return Fail(absl::UnavailableError("llmc-server exited at start; see its error above"));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  {
    std::ifstream in(ready);
    if (!(in >> grpc_port >> http_port)) {
      kill(server, SIGTERM);
      return Fail(absl::UnavailableError("llmc-server did not start within 30 s"));
    }
  }
  const std::string addr = absl::StrCat(c.host, ":", grpc_port);
  auto worker_argv = [&](int i) {
    std::vector<std::string> a = {worker_bin, "--coordinator", addr, "--token-file", data_dir + "/worker.token",
                                  "--worker-id", absl::StrCat("local-", i)};
    if (c.threads > 0) a.insert(a.end(), {"--threads", absl::StrCat(c.threads)});
    if (!c.device.empty()) a.insert(a.end(), {"--device", c.device});
    if (c.comm_timeout > 0) a.insert(a.end(), {"--comm-timeout", absl::StrCat(c.comm_timeout)});
    return a;
  };
  std::map<pid_t, int> workers;  // pid -> index
  for (int i = 0; i < c.workers; ++i) workers[Spawn(worker_argv(i), c.device == "cuda" ? WorkerGpu(i) : "")] = i;
  // llmc-server serves the console from --web-dir, else BIN/../share/llmc/web (server/web_console.h), when the
  // folder is there.
  const fs::path web = c.web_dir.empty() ? bin.parent_path() / "share" / "llmc" / "web" : fs::absolute(c.web_dir);
  if (fs::exists(web / "index.html", ec))
    std::fprintf(stderr, "llmc serve: web console on http://%s:%d/console/ (sign in with a token)\n", c.host.c_str(),
                 http_port);
  else
    std::fprintf(stderr, "llmc serve: no web console: %s is missing (build the llmc_web target)\n", web.c_str());
  std::fprintf(stderr,
               "llmc serve: coordinator on %s (HTTP http://%s:%d: /metrics, /healthz, /api/v1), %d worker%s\n"
               "llmc serve: admin token in %s/admin.token (export LLMC_TOKEN=$(cat %s/admin.token))\n"
               "llmc serve: data in %s; Ctrl-C stops everything\n",
               addr.c_str(), c.host.c_str(), http_port, c.workers, c.workers == 1 ? "" : "s", data_dir.c_str(),
               data_dir.c_str(), data_dir.c_str());
  std::fflush(stderr);
  while (true) {
    struct timespec ts = {0, 500 * 1000 * 1000};
    int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig == SIGINT || sig == SIGTERM) break;
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
      std::string how = WIFSIGNALED(status) ? absl::StrCat("signal ", WTERMSIG(status))
                                            : absl::StrCat("status ", WEXITSTATUS(status));
      if (pid == server) {
        std::fprintf(stderr, "llmc serve: llmc-server exited (%s); restarting it\n", how.c_str());
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        server = Spawn(server_argv());
      } else if (auto it = workers.find(pid); it != workers.end()) {
        int i = it->second;
        workers.erase(it);
        std::fprintf(stderr, "llmc serve: worker local-%d exited (%s); restarting it\n", i, how.c_str());
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        workers[Spawn(worker_argv(i), c.device == "cuda" ? WorkerGpu(i) : "")] = i;
      }
    }
  }
  std::fprintf(stderr, "llmc serve: stopping\n");
  for (const auto& [pid, i] : workers) kill(pid, SIGTERM);
  kill(server, SIGTERM);
  size_t left = workers.size() + 1;
  for (int i = 0; i < 100 && left > 0; ++i) {
    int status;
    while (waitpid(-1, &status, WNOHANG) > 0) --left;
    if (left > 0) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (left > 0) {
    for (const auto& [pid, i] : workers) kill(pid, SIGKILL);
    kill(server, SIGKILL);
    while (waitpid(-1, nullptr, 0) > 0) {
    }
  }
  fs::remove(ready, ec);
  return 0;
}

void AddClientFlags(CLI::App* sub, ServiceCommands* c) {
  sub->add_option("--server", c->server, "coordinator address (default $LLMC_SERVER, else 127.0.0.1:7443)");
  sub->add_option("--token", c->token, "bearer token (default $LLMC_TOKEN)");
  sub->add_option("--ca-cert", c->ca_cert, "PEM root certificates: connect with TLS (default $LLMC_CA_CERT)");
  sub->add_flag("--json", c->json, "print JSON");
}

}  // namespace

std::shared_ptr<ServiceCommands> AddServiceCommands(CLI::App& app) {
  auto c = std::make_shared<ServiceCommands>();
  auto* s = app.add_subcommand("submit", "Submit a compression job to a coordinator (prints the job and its id)");
  c->submit = s;
  s->add_option("MODEL", c->model, "model directory (path, file:// or s3://)")->required();
  s->add_option("OUTPUT", c->output, "output location (must not exist)")->required();
  s->add_option("--scheme", c->scheme, "preset scheme, e.g. W4A16 (see `llmc schemes`)");
  s->add_option("--algorithm", c->algorithm, "with --scheme: rtn (default), gptq, awq, smoothquant+gptq, sparsegpt, wanda");
  s->add_option("--recipe", c->recipe, "llm-compressor recipe YAML file (sent with the job)");
  c->ignore_opt = s->add_option("--ignore", c->ignore, "module to leave unquantized (repeatable; default lm_head)")
                      ->allow_extra_args(false);
  s->add_option("--dataset", c->dataset, "calibration data (text or JSONL)");
  s->add_option("--num-samples", c->num_samples, "calibration samples (default 128)");
  s->add_option("--seq-len", c->seq_len, "calibration sequence length (default 512)");
  s->add_option("--seed", c->seed, "calibration sampling seed (default 42)");
  s->add_option("--eval-text", c->eval_text, "text file for a perplexity report");
  s->add_option("--max-shard-size", c->max_shard_size, "largest output shard (default 5GB)");
  s->add_option("--observer", c->observer, "weight observer: minmax, mse or imatrix_mse (calibrated)");
  s->add_option("--calib-activations", c->calib_activations,
                "GPU workers: calibration activations between blocks: fp32 (default), bf16 or host");
  s->add_option("--precision", c->precision,
                "GPU workers: calibration arithmetic: fp32 (exact), tf32 (default) or bf16 (bf16 GEMM inputs, fp32 "
                "accumulation)");
  s->add_option("--moe-calibrate-all-experts", c->moe_calibrate_all_experts,
                "mixture-of-experts models: true (default) or false, every calibration token through every expert");
  s->add_option("--gpus", c->gpus, "workers to gang-schedule (default 1)");
  s->add_option("--min-gpus", c->min_gpus,
                "with --gpus: the fewest workers the job may go on with when fewer are registered (default: gpus)");
  s->add_option("--priority", c->priority, "higher runs first (default 0)");
  s->add_option("--label", c->labels, "KEY=VALUE (repeatable)")->allow_extra_args(false);
  s->add_option("--request-id", c->request_id, "idempotency key (default: random); resubmitting it returns the same job");
  s->add_flag("--watch", c->then_watch, "then watch the job until it ends");
  s->add_flag("--no-progress", c->no_progress, "no progress bar (with --watch)");
  AddClientFlags(s, c.get());

  c->get = app.add_subcommand("get", "Show a job");
  c->get->add_option("ID", c->id, "job id")->required();
  AddClientFlags(c->get, c.get());

  c->list = app.add_subcommand("list", "List jobs, newest first");
  c->list->add_option("--state", c->state, "QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED or RETRYING");
  c->list->add_option("--label", c->labels, "KEY=VALUE that must match (repeatable)")->allow_extra_args(false);
  c->list->add_option("--page-size", c->page_size, "jobs per page (default 50)");
  c->list->add_flag("--all", c->all_pages, "every page");
  AddClientFlags(c->list, c.get());

  c->watch = app.add_subcommand("watch", "Follow a job's events with a progress bar; exit 0 only if it succeeded");
  c->watch->add_option("ID", c->id, "job id")->required();
  c->watch->add_option("--from-seq", c->from_seq, "replay events after this seq (default: all)");
  c->watch->add_flag("--no-progress", c->no_progress, "no progress bar");
  AddClientFlags(c->watch, c.get());

  c->cancel = app.add_subcommand("cancel", "Cancel a queued or running job");
  c->cancel->add_option("ID", c->id, "job id")->required();
  AddClientFlags(c->cancel, c.get());

  auto* v = app.add_subcommand("serve", "Run a coordinator and local workers (one process tree) until Ctrl-C");
  c->serve = v;
  v->add_option("--data-dir", c->data_dir, "job store, tokens and default storage")->capture_default_str();
  v->add_option("--host", c->host, "address to listen on")->capture_default_str();
  v->add_option("--port", c->port, "gRPC port (0: any)")->capture_default_str();
  v->add_option("--http-port", c->http_port, "HTTP port for /metrics, /healthz, /api/v1 (0: any)")->capture_default_str();
  v->add_option("--workers", c->workers, "local worker processes")->capture_default_str();
  v->add_option("--threads", c->threads, "CPU threads per worker (default: one per core)");
  v->add_option("--device", c->device, "device of the local workers: cpu or cuda (cuda: one GPU each, round-robin; default cpu)");
  v->add_option("--comm-timeout", c->comm_timeout,
                "seconds the ranks of a multi-worker job wait for each other (default: the worker's, 300)")
      ->check(CLI::Range(1, 24 * 3600));
  v->add_option("--allowed-root", c->roots, "extra directory or s3:// prefix jobs may read and write (repeatable)");
  v->add_option("--allowed-input-root", c->input_roots, "extra location jobs may only read (repeatable)");
  v->add_option("--max-num-samples", c->max_num_samples, "most calibration samples a job may ask for (default 4096)")
      ->check(CLI::PositiveNumber);
  v->add_option("--max-seq-len", c->max_seq_len, "longest calibration sample a job may ask for (default 16384)")
      ->check(CLI::PositiveNumber);
  v->add_option("--max-calibration-tokens", c->max_calibration_tokens,
                "most calibration tokens, num_samples x seq_len, a job may ask for (default 4194304)")
      ->check(CLI::PositiveNumber);
  v->add_flag("--tenant-roots", c->tenant_roots,
              "each tenant's jobs may use only ROOT/TENANT of every allowed root (and the shared roots)");
  v->add_option("--shared-root", c->shared_roots,
                "with --tenant-roots: a directory or s3:// prefix every tenant may read and write (repeatable)");
  v->add_option("--shared-input-root", c->shared_input_roots,
                "with --tenant-roots: a directory or s3:// prefix every tenant may read (repeatable)");
  v->add_option("--tenant-max-active-jobs", c->tenant_max_active_jobs,
                "most jobs one tenant may have queued or running (default: no quota)")
      ->check(CLI::PositiveNumber);
  v->add_option("--tenant-max-gpus", c->tenant_max_gpus,
                "most GPUs (spec.gpus summed) of one tenant's queued and running jobs (default: no quota)")
      ->check(CLI::PositiveNumber);
  v->add_option("--tenant-max-spec-bytes", c->tenant_max_spec_bytes,
                "most bytes of job specs one tenant's queued and running jobs may hold (default: no quota)")
      ->check(CLI::PositiveNumber);
  v->add_option("--lease-ms", c->lease_ms, "a worker silent this long is lost (default 6000)")
      ->check(CLI::PositiveNumber);
  v->add_option("--max-attempts", c->max_attempts, "lost attempts before a job fails (default 3)")
      ->check(CLI::PositiveNumber);
  v->add_option("--web-dir", c->web_dir, "the web console's folder (default: share/llmc/web beside the binaries)");
  v->add_flag("--metrics-auth", c->metrics_auth, "ask for a bearer token on /metrics too (/healthz stays open)");
  v->add_option("--http-max-connections", c->http_max_connections,
                "HTTP connections open at once (default 256)")
      ->check(CLI::Range(1, 65536));
  v->add_option("--http-max-connections-per-client", c->http_max_connections_per_client,
                "HTTP connections open at once from one client address (default 32; raise it behind a proxy)")
      ->check(CLI::Range(1, 65536));
  v->add_flag("--no-cwd-root", c->no_cwd_root,
              "do not allow the current directory (allowed by default, besides DATA_DIR/storage)");
  return c;
}

bool RunServiceCommand(const ServiceCommands& c, int* rc) {
  if (c.submit->parsed()) {
    ServiceCommands copy = c;
    if (c.ignore_opt->count() == 0) copy.ignore.clear();
    *rc = Submit(copy);
  } else if (c.get->parsed()) {
    *rc = Get(c);
  } else if (c.list->parsed()) {
    *rc = List(c);
  } else if (c.watch->parsed()) {
    *rc = Watch(c, c.id, c.from_seq);
  } else if (c.cancel->parsed()) {
    *rc = Cancel(c);
  } else if (c.serve->parsed()) {
    *rc = Serve(c);
  } else {
    return false;
  }
  return true;
}

}  // namespace llmc::cli
