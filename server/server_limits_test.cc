// Hostile and careless clients against a real llmc-server (Server::Start) over loopback gRPC and HTTP: every
// request here must be refused quickly with a canonical code and a bounded message, before anything is stored.
#include "server/server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <gtest/gtest.h>
#include <gmock/gmock.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "llmc/v1/compression.grpc.pb.h"
#include "server/http_api.h"
#include "tests/support/temp_dir.h"

namespace llmc::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

// The "billion laughs" recipe: nine levels of aliases, each repeating the one before ten times (10^9 values).
std::string BillionLaughs() {
  std::string y = "a: &a [x, x, x, x, x, x, x, x, x, x]\n";
  char prev = 'a';
  for (char c = 'b'; c <= 'i'; ++c) {
    y += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i) y += std::string(i ? ", *" : "*") + prev;
    y += "]\n";
    prev = c;
  }
  return y + "default_stage: {default_modifiers: {QuantizationModifier: {targets: [Linear], scheme: W4A16, ignore: *i}}}\n";
}

class ServerLimitsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path() + "/root";
    fs::create_directories(root_ + "/model");
    std::ofstream(root_ + "/model/config.json") << "{}";
    Start({});
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }
  void Start(ServerOptions o) {
    o.data_dir = tmp_.path() + "/data";
    o.listen = "127.0.0.1:0";
    o.http_listen = "127.0.0.1:0";
    o.allowed_roots = {root_};
    auto s = Server::Start(o);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    stub_ = v1::Compression::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", server_->grpc_port()),
                                                         grpc::InsecureChannelCredentials()));
    admin_ = ReadAll(o.data_dir + "/admin.token");
  }
  v1::JobSpec Spec() {
    v1::JobSpec s;
    s.set_model_uri(root_ + "/model");
    s.set_output_uri(root_ + "/out");
    s.mutable_preset()->set_scheme("W4A16");
    return s;
  }
  grpc::Status Create(const v1::JobSpec& spec, const std::string& rid = "r1") {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + admin_);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::CreateJobRequest r;
    r.set_request_id(rid);
    *r.mutable_spec() = spec;
    v1::Job job;
    return stub_->CreateJob(&ctx, r, &job);
  }
  grpc::Status Validate(const v1::JobSpec& spec, const std::string& token) {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + token);
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    v1::ValidateJobRequest r;
    *r.mutable_spec() = spec;
    v1::ValidateJobResponse resp;
    return stub_->ValidateJob(&ctx, r, &resp);
  }
  int JobCount() {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer " + admin_);
    v1::ListJobsRequest r;
    v1::ListJobsResponse resp;
    EXPECT_TRUE(stub_->ListJobs(&ctx, r, &resp).ok());
    return resp.jobs_size();
  }

  llmc::testing::TempDir tmp_;
  std::string root_, admin_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<v1::Compression::Stub> stub_;
};

TEST_F(ServerLimitsTest, BillionLaughsRecipeIsRefusedFast) {
  auto viewer = CreateTokenInDataDir(tmp_.path() + "/data", "default", "viewer", "v");
  ASSERT_TRUE(viewer.ok()) << viewer.status();
  v1::JobSpec spec = Spec();
  spec.clear_preset();
  spec.set_recipe_yaml(BillionLaughs());
  auto t0 = std::chrono::steady_clock::now();
  grpc::Status v = Validate(spec, *viewer);
  EXPECT_EQ(v.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(v.error_message(), HasSubstr("spec.recipe_yaml"));
  EXPECT_THAT(v.error_message(), HasSubstr("100000"));
  EXPECT_EQ(v.error_message().find("spec.recipe_yaml: spec.recipe_yaml"), std::string::npos) << v.error_message();
  grpc::Status c = Create(spec);
  EXPECT_EQ(c.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(c.error_message(), HasSubstr("100000"));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  EXPECT_EQ(JobCount(), 0);
}


// Every per-field limit: INVALID_ARGUMENT naming the field and the limit, nothing stored.
TEST_F(ServerLimitsTest, FieldLimitsAreEnforcedBeforeAnythingIsStored) {
  struct Case {
    std::string name;
    std::function<void(v1::JobSpec*)> edit;
    std::string field, limit;
  };
  const std::vector<Case> cases = {
      {"model_uri", [&](v1::JobSpec* s) { s->set_model_uri(root_ + "/" + std::string(5000, 'm')); }, "spec.model_uri", "4096"},
      {"output_uri", [&](v1::JobSpec* s) { s->set_output_uri(root_ + "/" + std::string(5000, 'o')); }, "spec.output_uri", "4096"},
      {"dataset_uri", [&](v1::JobSpec* s) { s->mutable_calibration()->set_dataset_uri(std::string(4097, 'd')); },
       "spec.calibration.dataset_uri", "4096"},
      {"eval_text_uri", [&](v1::JobSpec* s) { s->set_eval_text_uri(std::string(4097, 'e')); }, "spec.eval_text_uri", "4096"},
      {"recipe", [&](v1::JobSpec* s) { s->set_recipe_yaml(std::string(300 * 1024, '#')); }, "spec.recipe_yaml", "262144"},
      {"scheme", [&](v1::JobSpec* s) { s->mutable_preset()->set_scheme(std::string(65, 'W')); }, "spec.preset.scheme", "64"},
      {"labels count",
       [&](v1::JobSpec* s) {
         for (int i = 0; i < 65; ++i) (*s->mutable_labels())[absl::StrCat("k", i)] = "v";
       },
       "spec.labels", "64"},
      {"label key", [&](v1::JobSpec* s) { (*s->mutable_labels())[std::string(64, 'k')] = "v"; }, "spec.labels", "63"},
      {"label value", [&](v1::JobSpec* s) { (*s->mutable_labels())["k"] = std::string(257, 'v'); }, "spec.labels", "256"},
      {"ignore count",
       [&](v1::JobSpec* s) {
         for (int i = 0; i < 1025; ++i) s->add_ignore("lm_head");
       },
       "spec.ignore", "1024"},
      {"ignore entry", [&](v1::JobSpec* s) { s->add_ignore(std::string(513, 'x')); }, "spec.ignore[0]", "512"},
      {"num_samples", [&](v1::JobSpec* s) { s->mutable_calibration()->set_num_samples(4097); },
       "spec.calibration.num_samples", "4096"},
      {"seq_len", [&](v1::JobSpec* s) { s->mutable_calibration()->set_seq_len(16385); }, "spec.calibration.seq_len", "16384"},
      {"tokens",
       [&](v1::JobSpec* s) {
         s->mutable_calibration()->set_num_samples(4096);
         s->mutable_calibration()->set_seq_len(2048);
       },
       "num_samples x seq_len", "4194304"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::JobSpec spec = Spec();
    c.edit(&spec);
    grpc::Status st = Create(spec, "r-" + c.name);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(c.field));
    EXPECT_THAT(st.error_message(), HasSubstr(c.limit));
    EXPECT_LE(st.error_message().size(), 600u);
    EXPECT_EQ(Validate(spec, admin_).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  grpc::Status rid = Create(Spec(), std::string(129, 'r'));
  EXPECT_EQ(rid.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(rid.error_message(), HasSubstr("128"));
  EXPECT_EQ(JobCount(), 0);
  // A spec at the limits is accepted.
  v1::JobSpec ok = Spec();
  for (int i = 0; i < 64; ++i) (*ok.mutable_labels())[absl::StrCat("k", i)] = std::string(256, 'v');
  ok.mutable_calibration()->set_num_samples(2048);
  ok.mutable_calibration()->set_seq_len(2048);
  grpc::Status created = Create(ok, std::string(128, 'r'));
  EXPECT_TRUE(created.ok()) << created.error_message();
  EXPECT_EQ(JobCount(), 1);
}

// A message over 4 MiB never reaches the handlers.
TEST_F(ServerLimitsTest, OversizedMessageIsRefusedByGrpc) {
  v1::JobSpec spec = Spec();
  spec.set_recipe_yaml(std::string(5 << 20, '#'));
  grpc::Status st = Create(spec);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_EQ(JobCount(), 0);
}

// The operator's calibration bounds replace the defaults.
TEST_F(ServerLimitsTest, OperatorSetsCalibrationBounds) {
  server_->Shutdown();
  server_.reset();
  ServerOptions o;
  o.limits.max_num_samples = 16;
  o.limits.max_seq_len = 1024;
  o.limits.max_calibration_tokens = 8192;
  Start(o);
  v1::JobSpec spec = Spec();
  spec.mutable_calibration()->set_num_samples(16);
  spec.mutable_calibration()->set_seq_len(2048);
  grpc::Status st = Create(spec, "a");
  EXPECT_THAT(st.error_message(), HasSubstr("--max-seq-len"));
  spec.mutable_calibration()->set_seq_len(1024);
  st = Create(spec, "b");
  EXPECT_THAT(st.error_message(), HasSubstr("8192"));
  spec.mutable_calibration()->set_num_samples(0);  // 0 means 128
  spec.mutable_calibration()->set_seq_len(64);
  st = Create(spec, "c");
  EXPECT_THAT(st.error_message(), HasSubstr("num_samples 128"));
  spec.mutable_calibration()->set_num_samples(8);
  EXPECT_TRUE(Create(spec, "d").ok());
}

// Control characters (a newline forges a log line, a NUL fails late), over-long path components, non-UTF-8 text
// and long echoes: each INVALID_ARGUMENT (or PERMISSION_DENIED) with a message, never UNKNOWN or INTERNAL, and
// never quoting more than about 200 bytes of the input.
TEST_F(ServerLimitsTest, MalformedStringsAreRefusedWithBoundedMessages) {
  struct Case {
    std::string name;
    std::function<void(v1::JobSpec*)> edit;
    grpc::StatusCode code;
    std::string says;
  };
  const std::string nul("x\0y", 3);
  const std::vector<Case> cases = {
      {"NUL in model_uri", [&](v1::JobSpec* s) { s->set_model_uri(root_ + "/model" + nul); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.model_uri: control character 0x00"},
      {"newline in output_uri",
       [&](v1::JobSpec* s) { s->set_output_uri(root_ + "/out\n[info] job forged: SUCCEEDED"); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.output_uri: control character 0x0a"},
      {"ESC in label value", [&](v1::JobSpec* s) { (*s->mutable_labels())["k"] = "\x1b[31mred"; },
       grpc::StatusCode::INVALID_ARGUMENT, "control character 0x1b"},
      {"newline in ignore", [&](v1::JobSpec* s) { s->add_ignore("lm_head\nx"); }, grpc::StatusCode::INVALID_ARGUMENT,
       "spec.ignore[0]"},
      {"NUL in recipe", [&](v1::JobSpec* s) { s->set_recipe_yaml("a: 1\n" + nul); }, grpc::StatusCode::INVALID_ARGUMENT,
       "spec.recipe_yaml: control character 0x00"},
      {"300-byte output component", [&](v1::JobSpec* s) { s->set_output_uri(root_ + "/" + std::string(300, 'o')); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.output_uri"},
      {"300-byte model component", [&](v1::JobSpec* s) { s->set_model_uri(root_ + "/" + std::string(300, 'm')); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.model_uri"},
      {"5000-byte component", [&](v1::JobSpec* s) { s->set_output_uri(root_ + "/" + std::string(5000, 'o')); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.output_uri"},
      {"long relative path", [&](v1::JobSpec* s) { s->set_model_uri(std::string(4000, 'r')); },
       grpc::StatusCode::INVALID_ARGUMENT, "(4000 bytes)"},
      {"gs:// URI", [&](v1::JobSpec* s) { s->set_model_uri("gs://bucket/model"); }, grpc::StatusCode::INVALID_ARGUMENT,
       "spec.model_uri: unsupported scheme 'gs'"},
      {"http:// URI", [&](v1::JobSpec* s) { s->set_output_uri("http://example.com/out"); },
       grpc::StatusCode::INVALID_ARGUMENT, "spec.output_uri: unsupported scheme 'http'"},
      {"long path outside the roots", [&](v1::JobSpec* s) { s->set_output_uri("/elsewhere/" + std::string(4000, 'o')); },
       grpc::StatusCode::PERMISSION_DENIED, "bytes) is outside"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    v1::JobSpec spec = Spec();
    c.edit(&spec);
    grpc::Status st = Create(spec, "r1");
    EXPECT_EQ(st.error_code(), c.code) << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr(c.says));
    EXPECT_LE(st.error_message().size(), 600u) << st.error_message();
    EXPECT_EQ(st.error_message().find('\n'), std::string::npos);
  }
  grpc::Status rid = Create(Spec(), "r\n1");
  EXPECT_EQ(rid.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(rid.error_message(), HasSubstr("request_id: control character"));
  // Not UTF-8: protobuf refuses to parse the request; the answer still says what to fix.
  for (const std::string& bad : {std::string("\xff\xfe"), std::string("/a\xc3")}) {
    v1::JobSpec spec = Spec();
    spec.set_model_uri(bad);
    grpc::Status st = Create(spec, "r2");
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_THAT(st.error_message(), HasSubstr("UTF-8"));
  }
  EXPECT_EQ(JobCount(), 0);
}

// A data directory whose jobs.db was emptied does not start as a new, empty service.
TEST_F(ServerLimitsTest, EmptiedJobStoreIsRefusedAtStart) {
  server_->Shutdown();
  server_.reset();
  const std::string db = tmp_.path() + "/data/jobs.db";
  fs::remove(db + "-wal");
  fs::remove(db + "-shm");
  std::ofstream(db, std::ios::trunc).close();
  ServerOptions o;
  o.data_dir = tmp_.path() + "/data";
  o.listen = "127.0.0.1:0";
  o.http_listen = "";
  auto s = Server::Start(o);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("jobs.db: the job store is empty"));
}

// A backup taken while the server runs; a damaged store is refused at start with the way back; the backup restores
// it; one server per data directory.
TEST_F(ServerLimitsTest, DamagedStoreIsRefusedAndABackupRestoresIt) {
  const std::string data = tmp_.path() + "/data";
  ASSERT_TRUE(Create(Spec(), "before").ok());
  ASSERT_TRUE(BackupDataDir(data, tmp_.path() + "/backup.db").ok());
  ServerOptions o;
  o.data_dir = data;
  o.listen = "127.0.0.1:0";
  o.http_listen = "";
  auto second = Server::Start(o);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr("another llmc-server"));
  auto busy = RestoreDataDir(data, tmp_.path() + "/backup.db");
  EXPECT_EQ(busy.status().code(), absl::StatusCode::kFailedPrecondition);
  server_->Shutdown();
  server_.reset();
  {
    std::fstream f(data + "/jobs.db", std::ios::in | std::ios::out | std::ios::binary);
    f << "this is no longer an SQLite file";
  }
  auto s = Server::Start(o);
  ASSERT_EQ(s.status().code(), absl::StatusCode::kDataLoss) << s.status();
  EXPECT_THAT(s.status().message(), HasSubstr("llmc-server restore"));
  auto moved = RestoreDataDir(data, tmp_.path() + "/backup.db");
  ASSERT_TRUE(moved.ok()) << moved.status();
  o.allowed_roots = {root_};
  Start(o);
  EXPECT_EQ(JobCount(), 1);
}

// Connections held open and idle by one client do not stop /healthz and /metrics for another, the server keeps at
// most kHttpMaxConnectionsPerClient of them, and every request is counted with the status it got (also those no
// route took).
TEST_F(ServerLimitsTest, IdleHttpConnectionsDoNotStopHealthOrMetrics) {
  // 64 connections from 127.0.0.2 that send nothing, opened at once (non-blocking) and all established before
  // /healthz is asked from 127.0.0.1.
  std::vector<int> idle;
  for (int i = 0; i < 64; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in from{};
    from.sin_family = AF_INET;
    from.sin_addr.s_addr = htonl(0x7f000002);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&from), sizeof(from)), 0) << strerror(errno);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(server_->http_port());
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    idle.push_back(fd);
  }
  for (int fd : idle) {
    pollfd p{fd, POLLOUT, 0};
    ASSERT_EQ(poll(&p, 1, 10000), 1);
    int err = 0;
    socklen_t len = sizeof(err);
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    ASSERT_EQ(err, 0);
  }
  httplib::Client cli("127.0.0.1", server_->http_port());
  cli.set_connection_timeout(3, 0);
  cli.set_read_timeout(3, 0);
  auto t0 = std::chrono::steady_clock::now();
  auto h = cli.Get("/healthz");
  ASSERT_TRUE(h) << httplib::to_string(h.error());
  EXPECT_EQ(h->status, 200);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  auto nope = cli.Get("/nope");
  ASSERT_TRUE(nope);
  EXPECT_EQ(nope->status, 404);
  auto wrong = cli.Post("/healthz", "", "text/plain");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 405);
  EXPECT_EQ(wrong->get_header_value("Allow"), "GET");
  // The server closed what 127.0.0.2 opened beyond its share at once (a read sees the end of the stream or a
  // reset), and kept the rest open until the idle timeout.
  auto closed_now = [&] {
    int n = 0;
    for (int fd : idle) {
      pollfd p{fd, POLLIN, 0};
      n += poll(&p, 1, 0) == 1 && (p.revents & (POLLIN | POLLHUP | POLLERR));
    }
    return n;
  };
  int closed = 0;
  for (int i = 0; i < 40 && (closed = closed_now()) < 64 - kHttpMaxConnectionsPerClient; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(closed, 64 - kHttpMaxConnectionsPerClient);
  // The metrics count the requests with their statuses, the connections refused and those open (the 32 idle ones
  // and this request's own, give or take the previous requests' connections still closing).
  auto m = cli.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  EXPECT_THAT(m->body, HasSubstr("llmc_http_requests_total{route=\"/healthz\",status=\"200\"} 1"));
  EXPECT_THAT(m->body, HasSubstr("llmc_http_requests_total{route=\"/healthz\",status=\"405\"} 1"));
  EXPECT_THAT(m->body, HasSubstr("llmc_http_requests_total{route=\"other\",status=\"404\"} 1"));
  EXPECT_THAT(m->body, ::testing::Not(HasSubstr("status=\"-1\"")));
  EXPECT_THAT(m->body, HasSubstr(absl::StrCat("llmc_http_connections_refused_total{reason=\"per_client\"} ",
                                              64 - kHttpMaxConnectionsPerClient, "\n")));
  EXPECT_THAT(m->body, HasSubstr("llmc_http_connections_refused_total{reason=\"total\"} 0\n"));
  const std::string gauge = "\nllmc_http_connections ";
  const size_t at = m->body.find(gauge);
  ASSERT_NE(at, std::string::npos);
  const int open = std::atoi(m->body.c_str() + at + gauge.size());
  EXPECT_GE(open, kHttpMaxConnectionsPerClient + 1);
  EXPECT_LE(open, kHttpMaxConnectionsPerClient + 4);
  // An idle connection is closed by the server after its idle timeout: every one is closed by then.
  std::this_thread::sleep_for(std::chrono::seconds(kHttpIdleTimeoutS + 2));
  EXPECT_EQ(closed_now(), 64);
  for (int fd : idle) close(fd);
}

}  // namespace
}  // namespace llmc::server
