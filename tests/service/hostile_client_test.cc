// A hostile client against a separate `llmc serve` process run under an address-space limit (prlimit --as), over
// real gRPC and HTTP on loopback: resource bombs, oversized and malformed fields, path escapes, other tenants' jobs
// and idle connections. Every request gets its canonical code and a bounded message, and afterwards the coordinator
// is the same process as before (not restarted), still answers, and its resident memory is bounded.
// `llmc serve` gets the tenant and quota flags here, so this also checks that it forwards them to llmc-server.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <algorithm>
#include <cerrno>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <thread>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "llmc/v1/compression.grpc.pb.h"
#include "proto/channel.h"
#include "tests/service/service_fixture.h"
#include "tests/support/process.h"
#include "tests/support/synthetic_model.h"

namespace llmc::rpc {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::ReadAll;
using testing::RunCapture;

constexpr size_t kMaxMessage = 4096;           // no error message may be longer (docs/api.md, "Limits")
constexpr int64_t kAddressSpace = 4LL << 30;   // prlimit --as for `llmc serve` and its children
constexpr int64_t kMaxServerRssKb = 256 << 10;  // the coordinator's resident memory afterwards, and at its peak
constexpr int64_t kMaxServerPeakKb = 512 << 10;

// VmRSS / VmHWM of `pid` in kB (-1 if unknown).
int64_t ProcStatusKb(pid_t pid, const std::string& key) {
  std::istringstream in(ReadAll(absl::StrCat("/proc/", pid, "/status")));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) != 0) continue;
    std::vector<std::string> parts = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    int64_t v = -1;
    if (parts.size() >= 2 && absl::SimpleAtoi(parts[1], &v)) return v;
  }
  return -1;
}

// The llmc-server child of `llmc serve` (pid `serve`); -1 if none.
pid_t ServerChild(pid_t serve) {
  std::istringstream in(ReadAll(absl::StrCat("/proc/", serve, "/task/", serve, "/children")));
  pid_t p;
  while (in >> p)
    if (ReadAll(absl::StrCat("/proc/", p, "/cmdline")).find("llmc-server") != std::string::npos) return p;
  return -1;
}

SyntheticLlamaShape TinyShape() {
  SyntheticLlamaShape shape;
  shape.hidden = 128;
  shape.intermediate = 256;
  shape.layers = 1;
  shape.heads = 2;
  shape.kv_heads = 1;
  shape.vocab = 128;
  return shape;
}

class HostileClientTest : public testing::ServiceFixture {
 protected:
  // `llmc serve` under prlimit with per-tenant roots (work_/TENANT), a shared read-only model directory and quotas.
  // Opens up to `n` TCP connections to the HTTP port from `source` (an IPv4 loopback address, host order), one
  // after another for at most `budget`, leaving them open (every second one with an unfinished request); returns
  // them and how many of them the server still holds (the others read as closed: end of stream or reset).
  std::pair<std::vector<int>, int> HeldHttpConnections(uint32_t source, int n, std::chrono::seconds budget) {
    std::vector<int> socks;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n && std::chrono::steady_clock::now() - t0 < budget; ++i) {
      int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      if (fd < 0) break;
      sockaddr_in from{};
      from.sin_family = AF_INET;
      from.sin_addr.s_addr = htonl(source);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_port = htons(static_cast<uint16_t>(http_port_));
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      if (::bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)) != 0 ||
          ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        ADD_FAILURE() << "connection " << i << ": " << std::strerror(errno);
        ::close(fd);
        break;
      }
      if (i % 2) {
        const char* half = "GET /api/v1/jobs HTTP/1.1\r\nHost: x\r\n";  // never finished
        (void)!::send(fd, half, std::strlen(half), MSG_NOSIGNAL);
      }
      socks.push_back(fd);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    int held = 0;
    for (int fd : socks) {
      pollfd p{fd, POLLIN, 0};
      held += ::poll(&p, 1, 0) == 0;
    }
    return {socks, held};
  }

  void StartHostileServe(int workers) {
    shared_ = tmp_.path() + "/shared";
    ASSERT_TRUE(WriteSyntheticLlama(shared_ + "/model", TinyShape(), DType::kBF16, 3, 1 << 20).ok());
    std::ofstream(shared_ + "/calib.txt") << "some calibration text\n";
    launcher_ = {"/usr/bin/prlimit", absl::StrCat("--as=", kAddressSpace), "--"};
    shared_input_root_ = false;  // with --tenant-roots it would stand for ../shared/TENANT (created on first use)
    StartServe(workers, {"--tenant-roots", "--shared-input-root", shared_, "--tenant-max-active-jobs", "2",
                         "--tenant-max-spec-bytes", "4096", "--max-seq-len", "2048", "--max-num-samples", "256",
                         "--lease-ms", "3000", "--max-attempts", "2"});
    ASSERT_FALSE(HasFatalFailure());
    server_pid_ = ServerChild(server_);
    ASSERT_GT(server_pid_, 0) << "no llmc-server child of llmc serve";
    for (const char* t : {"a", "b"}) {
      std::string out;
      ASSERT_EQ(RunCapture({testing::BinDir() + "llmc-server", "token", "create", "--data-dir", data_, "--tenant", t,
                            "--role", "submitter"},
                           &out),
                0)
          << out;
      while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
      tokens_[t] = out;
    }
  }
  v1::JobSpec Spec(const std::string& out) {
    v1::JobSpec s;
    s.set_model_uri(shared_ + "/model");
    s.set_output_uri(out);
    s.mutable_preset()->set_scheme("W8A16");
    return s;
  }
  // A CreateJob with a 10 s deadline; the message must be bounded whatever happens.
  grpc::Status Create(const std::string& token, const std::string& rid, const v1::JobSpec& spec, v1::Job* job = nullptr) {
    grpc::ClientContext ctx;
    AddAuth(&ctx, token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::CreateJobRequest r;
    r.set_request_id(rid);
    *r.mutable_spec() = spec;
    v1::Job j;
    grpc::Status s = stub_->CreateJob(&ctx, r, job ? job : &j);
    EXPECT_LE(s.error_message().size(), kMaxMessage) << rid;
    return s;
  }
  // The coordinator is the process it was at the start, answers /healthz and /metrics, and is small.
  void ExpectServerAliveAndSmall() {
    EXPECT_TRUE(testing::Alive(server_)) << "llmc serve exited";
    EXPECT_EQ(ServerChild(server_), server_pid_) << "llmc-server was restarted (it exited or crashed)";
    httplib::Client http("127.0.0.1", http_port_);
    http.set_connection_timeout(2);
    http.set_read_timeout(2);
    auto h = http.Get("/healthz");
    ASSERT_TRUE(h) << "/healthz did not answer";
    EXPECT_EQ(h->status, 200);
    const int64_t rss = ProcStatusKb(server_pid_, "VmRSS"), peak = ProcStatusKb(server_pid_, "VmHWM");
    std::cerr << "llmc-server: VmRSS " << rss << " kB, VmHWM " << peak << " kB (limits " << kMaxServerRssKb << ", "
              << kMaxServerPeakKb << ")\n";
    EXPECT_GT(rss, 0);
    EXPECT_LT(rss, kMaxServerRssKb);
    EXPECT_LT(peak, kMaxServerPeakKb);
  }

  std::string shared_;
  pid_t server_pid_ = -1;
  std::map<std::string, std::string> tokens_;
};

// "billion laughs": nine levels of ten aliases each, 10^9 values once expanded, in under 300 bytes.
std::string BillionLaughs() {
  std::string y = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
  for (int i = 1; i < 9; ++i) {
    absl::StrAppend(&y, "a", i, ": &a", i, " [");
    for (int k = 0; k < 10; ++k) absl::StrAppend(&y, k ? ", " : "", "*a", i - 1);
    absl::StrAppend(&y, "]\n");
  }
  return y;
}

TEST_F(HostileClientTest, HostileRequestsGetCanonicalCodesAndTheServerStaysBounded) {
  StartHostileServe(/*workers=*/0);
  const std::string a = tokens_["a"];
  const std::string out = work_ + "/a/out";
  ASSERT_TRUE(Create(a, "baseline", Spec(out)).ok());  // the request the cases below change

  struct Case {
    std::string name;
    std::function<void(v1::JobSpec*, std::string* rid)> change;
    grpc::StatusCode code;
    std::string says;  // a part of the message
  };
  const std::vector<Case> cases = {
      {"billion laughs", [](v1::JobSpec* s, std::string*) { s->set_recipe_yaml(BillionLaughs()); },
       grpc::StatusCode::INVALID_ARGUMENT, "recipe"},
      {"recipe over 256 KiB",
       [](v1::JobSpec* s, std::string*) { s->set_recipe_yaml("# " + std::string(300 << 10, 'x') + "\n"); },
       grpc::StatusCode::INVALID_ARGUMENT, "recipe_yaml"},
      {"message over 4 MiB",
       [](v1::JobSpec* s, std::string*) { s->set_recipe_yaml("# " + std::string(5 << 20, 'x') + "\n"); },
       grpc::StatusCode::RESOURCE_EXHAUSTED, ""},
      {"65 labels",
       [](v1::JobSpec* s, std::string*) {
         for (int i = 0; i < 65; ++i) (*s->mutable_labels())[absl::StrCat("k", i)] = "v";
       },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.labels"},
      {"label value of 257 bytes",
       [](v1::JobSpec* s, std::string*) { (*s->mutable_labels())["k"] = std::string(257, 'v'); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.labels"},
      {"URI of 5000 bytes",
       [&](v1::JobSpec* s, std::string*) { s->set_model_uri(shared_ + "/" + std::string(5000, 'm')); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.model_uri"},
      {"path component of 300 bytes",
       [&](v1::JobSpec* s, std::string*) { s->set_output_uri(work_ + "/a/" + std::string(300, 'o')); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.output_uri"},
      {"NUL in a URI",
       [&](v1::JobSpec* s, std::string*) { s->set_model_uri(shared_ + std::string("/mo\0del", 7)); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.model_uri"},
      {"newline in a label",
       [](v1::JobSpec* s, std::string*) { (*s->mutable_labels())["k"] = "line\n[info] forged"; },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.labels"},
      {"ESC in the request id", [](v1::JobSpec*, std::string* rid) { *rid = "r\x1b[2J"; },
       grpc::StatusCode::INVALID_ARGUMENT, "request_id"},
      {"request id of 129 bytes", [](v1::JobSpec*, std::string* rid) { *rid = std::string(129, 'r'); },
       grpc::StatusCode::INVALID_ARGUMENT, "request_id"},
      {"non-UTF-8 text", [](v1::JobSpec* s, std::string*) { (*s->mutable_labels())["k"] = "\xff\xfe"; },
       grpc::StatusCode::INVALID_ARGUMENT, ""},
      {"huge seq_len",
       [&](v1::JobSpec* s, std::string*) {
         s->mutable_preset()->set_algorithm("gptq");
         s->mutable_calibration()->set_dataset_uri(shared_ + "/calib.txt");
         s->mutable_calibration()->set_seq_len(1 << 30);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "--max-seq-len"},
      {"huge num_samples",
       [&](v1::JobSpec* s, std::string*) {
         s->mutable_preset()->set_algorithm("gptq");
         s->mutable_calibration()->set_dataset_uri(shared_ + "/calib.txt");
         s->mutable_calibration()->set_num_samples(2000000000);
       },
       grpc::StatusCode::INVALID_ARGUMENT, "--max-num-samples"},
      {"relative path", [](v1::JobSpec* s, std::string*) { s->set_model_uri("../../etc"); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.model_uri"},
      {"data directory as input", [&](v1::JobSpec* s, std::string*) { s->set_model_uri(data_); },
       grpc::StatusCode::PERMISSION_DENIED, "spec.model_uri"},
      {"data directory as output", [&](v1::JobSpec* s, std::string*) { s->set_output_uri(data_ + "/storage/x"); },
       grpc::StatusCode::PERMISSION_DENIED, "spec.output_uri"},
      {"path escape with ..", [&](v1::JobSpec* s, std::string*) { s->set_output_uri(work_ + "/a/../b/x"); },
       grpc::StatusCode::PERMISSION_DENIED, "spec.output_uri"},
      {"another tenant's root", [&](v1::JobSpec* s, std::string*) { s->set_output_uri(work_ + "/b/x"); },
       grpc::StatusCode::PERMISSION_DENIED, "spec.output_uri"},
      {"spec over --tenant-max-spec-bytes",
       [](v1::JobSpec* s, std::string*) {
         for (int i = 0; i < 20; ++i) (*s->mutable_labels())[absl::StrCat("k", i)] = std::string(250, 'v');
       },
       grpc::StatusCode::RESOURCE_EXHAUSTED, "--tenant-max-spec-bytes (4096)"},
  };
  int n = 0;
  double slowest_ms = 0;
  for (const auto& c : cases) {
    v1::JobSpec spec = Spec(absl::StrCat(out, "-", n));
    std::string rid = absl::StrCat("case-", n++);
    c.change(&spec, &rid);
    const auto t0 = std::chrono::steady_clock::now();
    grpc::Status s = Create(a, rid, spec);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_EQ(s.error_code(), c.code) << c.name << ": " << s.error_message().substr(0, 300);
    if (!c.says.empty()) {
      EXPECT_THAT(s.error_message(), HasSubstr(c.says)) << c.name;
    }
    EXPECT_LT(ms, 3000) << c.name;
    slowest_ms = std::max(slowest_ms, ms);
  }
  std::cerr << cases.size() << " hostile CreateJobs answered, the slowest in " << slowest_ms << " ms\n";
  // The bomb again and again through ValidateJob: each refused within the deadline, and memory stays put (below).
  const auto t_bombs = std::chrono::steady_clock::now();
  for (int i = 0; i < 20; ++i) {
    grpc::ClientContext ctx;
    AddAuth(&ctx, a);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    v1::ValidateJobRequest r;
    *r.mutable_spec() = Spec(out + "-v");
    r.mutable_spec()->set_recipe_yaml(BillionLaughs());
    v1::ValidateJobResponse resp;
    grpc::Status s = stub_->ValidateJob(&ctx, r, &resp);
    ASSERT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  }
  std::cerr << "20 billion-laughs ValidateJobs in "
            << std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t_bombs).count()
            << " ms\n";
  // Quotas forwarded by `llmc serve`: a second job fits, a third does not.
  ASSERT_TRUE(Create(a, "second", Spec(out + "-2")).ok());
  grpc::Status q = Create(a, "third", Spec(out + "-3"));
  EXPECT_EQ(q.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(q.error_message(), HasSubstr("--tenant-max-active-jobs (2)"));
  ExpectServerAliveAndSmall();
}

TEST_F(HostileClientTest, OtherTenantsJobsDoNotExistForTheCaller) {
  StartHostileServe(/*workers=*/0);
  v1::Job job;
  ASSERT_TRUE(Create(tokens_["a"], "mine", Spec(work_ + "/a/out"), &job).ok());
  const std::string b = tokens_["b"];
  {
    grpc::ClientContext ctx;
    AddAuth(&ctx, b);
    v1::GetJobRequest r;
    r.set_id(job.id());
    v1::Job got;
    grpc::Status s = stub_->GetJob(&ctx, r, &got);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(s.error_message(), ::testing::Not(HasSubstr("tenant a")));
  }
  {
    grpc::ClientContext ctx;
    AddAuth(&ctx, b);
    v1::CancelJobRequest r;
    r.set_id(job.id());
    v1::Job got;
    EXPECT_EQ(stub_->CancelJob(&ctx, r, &got).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    AddAuth(&ctx, b);
    v1::WatchJobRequest r;
    r.set_id(job.id());
    auto reader = stub_->WatchJob(&ctx, r);
    v1::JobEvent e;
    EXPECT_FALSE(reader->Read(&e));
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    grpc::ClientContext ctx;
    AddAuth(&ctx, b);
    v1::ListJobsResponse resp;
    ASSERT_TRUE(stub_->ListJobs(&ctx, {}, &resp).ok());
    EXPECT_EQ(resp.jobs_size(), 0);
  }
  // b may neither read a's directory as its model nor write beside a's output.
  v1::JobSpec spec = Spec(work_ + "/b/out");
  spec.set_model_uri(work_ + "/a/out");
  EXPECT_EQ(Create(b, "read-a", spec).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Create(b, "write-a", Spec(work_ + "/a/out-b")).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  // The same output as a's live job, from b's own root, is b's: no conflict leaks a's job.
  EXPECT_TRUE(Create(b, "own", Spec(work_ + "/b/out")).ok());
  // No token, a forged one.
  {
    grpc::ClientContext ctx;
    v1::ListJobsResponse resp;
    EXPECT_EQ(stub_->ListJobs(&ctx, {}, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    grpc::ClientContext ctx2;
    AddAuth(&ctx2, std::string(4000, 'A'));
    grpc::Status s = stub_->ListJobs(&ctx2, {}, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_LE(s.error_message().size(), kMaxMessage);
  }
  ExpectServerAliveAndSmall();
}

// Connections opened by one client and left idle (or with half a request) must not starve /healthz and /metrics for
// the others: the server keeps at most 32 (--http-max-connections-per-client) of one address's connections open
// and closes the rest as soon as they are accepted.
TEST_F(HostileClientTest, IdleHttpConnectionsDoNotStarveHealthAndMetrics) {
  StartHostileServe(/*workers=*/0);
  // 300 connections from 127.0.0.2, opened one after another for up to 4 s and left open, half of them with an
  // unfinished request.
  const auto t_open = std::chrono::steady_clock::now();
  auto [socks, held] = HeldHttpConnections(0x7f000002, 300, std::chrono::seconds(4));
  std::cerr << socks.size() << " connections opened from 127.0.0.2 in "
            << std::chrono::duration<double>(std::chrono::steady_clock::now() - t_open).count() << " s; the server holds "
            << held << "\n";
  EXPECT_GE(socks.size(), 100u);
  EXPECT_LE(held, 32);
  EXPECT_GE(held, 1);
  {
    // gRPC is served by its own threads meanwhile.
    grpc::ClientContext ctx;
    AddAuth(&ctx, admin_);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(2));
    v1::ListJobsResponse resp;
    EXPECT_TRUE(stub_->ListJobs(&ctx, {}, &resp).ok());
  }
  httplib::Client http("127.0.0.1", http_port_);
  http.set_connection_timeout(10);
  http.set_read_timeout(10);
  const auto t0 = std::chrono::steady_clock::now();
  auto h = http.Get("/healthz");
  const double healthz_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto m = http.Get("/metrics");
  const double both_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cerr << "meanwhile /healthz answered in " << healthz_s << " s, /healthz and /metrics in " << both_s << " s\n";
  ASSERT_TRUE(h) << "/healthz did not answer";
  EXPECT_EQ(h->status, 200);
  ASSERT_TRUE(m) << "/metrics did not answer";
  EXPECT_EQ(m->status, 200);
  EXPECT_THAT(m->body, HasSubstr("llmc_jobs"));
  EXPECT_LT(both_s, 2.0);
  for (int fd : socks) ::close(fd);
  ExpectServerAliveAndSmall();
}

// Links placed by a tenant in its own directories: an auxiliary file linked to the admin token, an output parent
// swapped for a link out of the roots after the job was queued. The worker refuses both when the job runs
// (PERMISSION_DENIED); nothing is written or removed outside, and the coordinator's staging cleanup does not
// follow the link either.
TEST_F(HostileClientTest, PathEscapesFailTheJobPermissionDenied) {
  StartHostileServe(/*workers=*/0);
  const std::string a = tokens_["a"];
  const std::string mine = work_ + "/a";
  fs::create_directories(mine);
  ASSERT_TRUE(WriteSyntheticLlama(mine + "/model", TinyShape(), DType::kBF16, 3, 1 << 20).ok());
  fs::create_symlink(data_ + "/admin.token", mine + "/model/chat_template.jinja");
  v1::JobSpec linked = Spec(mine + "/out1");
  linked.set_model_uri(mine + "/model");
  v1::Job job1, job2;
  ASSERT_TRUE(Create(a, "link", linked, &job1).ok());
  fs::create_directories(mine + "/parent");
  ASSERT_TRUE(Create(a, "swap", Spec(mine + "/parent/out2"), &job2).ok());
  const std::string outside = tmp_.path() + "/outside";
  fs::create_directories(outside + "/.out2.llmc-staging-" + job2.id());
  std::ofstream(outside + "/.out2.llmc-staging-" + job2.id() + "/keep") << "KEEP";
  fs::remove(mine + "/parent");
  fs::create_directory_symlink(outside, mine + "/parent");

  StartWorker("w1");
  v1::Job done1 = WaitFinal(job1.id());
  EXPECT_EQ(done1.state(), v1::FAILED);
  EXPECT_EQ(done1.error_code(), "PERMISSION_DENIED");
  EXPECT_THAT(done1.error(), HasSubstr("chat_template.jinja"));
  EXPECT_THAT(done1.error(), ::testing::Not(HasSubstr(ReadAll(data_ + "/admin.token").substr(0, 20))));
  EXPECT_FALSE(fs::exists(mine + "/out1"));
  v1::Job done2 = WaitFinal(job2.id());
  EXPECT_EQ(done2.state(), v1::FAILED);
  EXPECT_EQ(done2.error_code(), "PERMISSION_DENIED");
  EXPECT_THAT(done2.error(), HasSubstr(mine + "/parent"));
  EXPECT_FALSE(fs::exists(outside + "/out2"));
  EXPECT_EQ(ReadAll(outside + "/.out2.llmc-staging-" + job2.id() + "/keep"), "KEEP");
  ExpectServerAliveAndSmall();
}

// `llmc serve` passes every operator option it takes to llmc-server as given (local roots made absolute).
TEST_F(HostileClientTest, ServeForwardsEveryOperatorOption) {
  const std::string shared_rw = tmp_.path() + "/shared-rw", shared_ro = tmp_.path() + "/shared-ro";
  fs::create_directories(shared_rw);
  fs::create_directories(shared_ro);
  shared_input_root_ = false;
  StartServe(0, {"--tenant-roots", "--shared-root", shared_rw, "--shared-input-root", shared_ro,
                 "--tenant-max-active-jobs", "7", "--tenant-max-gpus", "2", "--tenant-max-spec-bytes", "100000",
                 "--lease-ms", "4500", "--max-attempts", "5", "--max-num-samples", "64", "--max-seq-len", "1024",
                 "--max-calibration-tokens", "32768", "--http-max-connections", "300",
                 "--http-max-connections-per-client", "4"});
  ASSERT_FALSE(HasFatalFailure());
  const pid_t server = ServerChild(server_);
  ASSERT_GT(server, 0);
  std::vector<std::string> argv = absl::StrSplit(ReadAll(absl::StrCat("/proc/", server, "/cmdline")), '\0');
  auto has = [&](const std::string& flag, const std::string& value) {
    for (size_t i = 0; i + 1 < argv.size(); ++i)
      if (argv[i] == flag && (value.empty() || argv[i + 1] == value)) return true;
    return false;
  };
  EXPECT_TRUE(has("--tenant-roots", ""));
  EXPECT_TRUE(has("--shared-root", "file://" + shared_rw) || has("--shared-root", shared_rw));
  EXPECT_TRUE(has("--shared-input-root", "file://" + shared_ro) || has("--shared-input-root", shared_ro));
  for (const auto& [flag, value] : std::vector<std::pair<std::string, std::string>>{
           {"--tenant-max-active-jobs", "7"}, {"--tenant-max-gpus", "2"}, {"--tenant-max-spec-bytes", "100000"},
           {"--lease-ms", "4500"}, {"--max-attempts", "5"}, {"--max-num-samples", "64"}, {"--max-seq-len", "1024"},
           {"--max-calibration-tokens", "32768"}, {"--http-max-connections", "300"},
           {"--http-max-connections-per-client", "4"}})
    EXPECT_TRUE(has(flag, value)) << flag;
  // The HTTP side keeps 4 of one client's 8 idle connections.
  {
    auto [socks, held] = HeldHttpConnections(0x7f000003, 8, std::chrono::seconds(4));
    EXPECT_EQ(held, 4);
    for (int fd : socks) ::close(fd);
  }
  // And llmc-server acts on them: a job asking for 3 GPUs is over the tenant's 2.
  ASSERT_TRUE(WriteSyntheticLlama(shared_ro + "/model", TinyShape(), DType::kBF16, 3, 1 << 20).ok());
  v1::JobSpec spec;
  spec.set_model_uri(shared_ro + "/model");
  spec.set_output_uri(shared_rw + "/out");
  spec.mutable_preset()->set_scheme("W8A16");
  spec.set_gpus(3);
  grpc::Status s = Create(admin_, "gpus", spec);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("--tenant-max-gpus (2)"));
}

// `llmc serve` refuses what it does not forward, naming it.
TEST_F(HostileClientTest, ServeRefusesOptionsItDoesNotTake) {
  std::string out;
  EXPECT_NE(RunCapture({testing::BinDir() + "llmc", "serve", "--data-dir", data_, "--tls-cert", "x.pem"}, &out), 0);
  EXPECT_NE(RunCapture({testing::BinDir() + "llmc", "serve", "--data-dir", data_, "--tenant-max-gpus", "-1"}, &out), 0);
  EXPECT_FALSE(fs::exists(data_ + "/serve.ready"));
}

}  // namespace
}  // namespace llmc::rpc
