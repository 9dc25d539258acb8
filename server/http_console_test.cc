// The console's side of the HTTP server against a real llmc-server (Server::Start) over loopback: static files
// confined to the web folder with their types and the security headers, auth on every API route, whoami,
// ValidateJob over HTTP with the field named, oversized bodies and wrong methods, and the job-change stream
// (server-sent events) filtered by tenant.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <csignal>
#include <map>
#include <mutex>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "server/http_api.h"
#include "server/server.h"
#include "server/web_console.h"
#include "tests/support/process.h"
#include "tests/support/temp_dir.h"

namespace llmc::server {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using ::testing::Not;

std::string ReadLine(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  std::getline(f, s);
  return s;
}

TEST(ErrorFieldTest, NamesTheFieldMessagesStartWith) {
  EXPECT_EQ(ErrorField("spec.output_uri: /etc/x is outside the allowed output roots"), "spec.output_uri");
  EXPECT_EQ(ErrorField("spec.calibration.dataset_uri: /d is not a readable file"), "spec.calibration.dataset_uri");
  EXPECT_EQ(ErrorField("spec.gpus 0: give 1 to 1024"), "spec.gpus");
  EXPECT_EQ(ErrorField("spec.observer 'x': use minmax, mse or imatrix_mse"), "spec.observer");
  EXPECT_EQ(ErrorField("spec.labels[\"k\"]: too long"), "spec.labels");
  EXPECT_EQ(ErrorField("request_id: required"), "request_id");
  EXPECT_EQ(ErrorField("spec. odd"), "");
  EXPECT_EQ(ErrorField("the job store is unavailable"), "");
  EXPECT_EQ(ErrorField("specimen: x"), "");
}

TEST(WebConsoleTest, ServesFilesInsideTheFolderOnly) {
  testing::TempDir tmp;
  const std::string web = tmp.path() + "/web";
  fs::create_directories(web + "/js");
  std::ofstream(web + "/index.html") << "<!doctype html>";
  std::ofstream(web + "/js/app.js") << "export {};";
  std::ofstream(web + "/.secret.js") << "hidden";
  std::ofstream(web + "/notes.md") << "not served";
  std::ofstream(tmp.path() + "/outside.js") << "outside";
  fs::create_symlink(tmp.path() + "/outside.js", web + "/link.js");
  fs::create_directory_symlink(tmp.path(), web + "/up");
  auto wc = WebConsole::Open(web);
  ASSERT_TRUE(wc.ok()) << wc.status();
  auto idx = wc->Read("");
  ASSERT_TRUE(idx.ok()) << idx.status();
  EXPECT_EQ(idx->content_type, "text/html; charset=utf-8");
  auto js = wc->Read("js/app.js");
  ASSERT_TRUE(js.ok()) << js.status();
  EXPECT_EQ(js->body, "export {};");
  EXPECT_EQ(js->content_type, "text/javascript; charset=utf-8");
  for (const char* bad : {"../outside.js", "js/../../outside.js", ".secret.js", "link.js", "up/outside.js", "notes.md",
                          "js//app.js", "/etc/passwd", "js/app.js%00", "missing.js", "js"}) {
    auto r = wc->Read(bad);
    EXPECT_FALSE(r.ok()) << bad;
  }
  EXPECT_FALSE(WebConsole::Open(tmp.path() + "/none").ok());
  EXPECT_THAT(std::string(WebConsole::Open(tmp.path()).status().message()), HasSubstr("index.html"));
}

class HttpConsoleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path() + "/root";
    web_ = tmp_.path() + "/web";
    fs::create_directories(root_ + "/model");
    std::ofstream(root_ + "/model/config.json") << "{}";
    fs::create_directories(web_);
    std::ofstream(web_ + "/index.html") << "<!doctype html><title>console</title>";
    ServerOptions o;
    o.data_dir = tmp_.path() + "/data";
    o.listen = "127.0.0.1:0";
    o.http_listen = "127.0.0.1:0";
    o.allowed_roots = {root_};
    o.web_dir = web_;
    auto s = Server::Start(o);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    admin_ = ReadLine(o.data_dir + "/admin.token");
    for (auto [t, role] : {std::pair{"a", "submitter"}, {"b", "submitter"}, {"av", "viewer"}}) {
      auto tok = CreateTokenInDataDir(o.data_dir, t == std::string("av") ? "a" : t, role, "");
      ASSERT_TRUE(tok.ok()) << tok.status();
      tokens_[t] = *tok;
    }
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }
  httplib::Headers Auth(const std::string& who) { return {{"Authorization", "Bearer " + tokens_[who]}}; }
  std::string Spec(const std::string& out) {
    return nlohmann::json{{"modelUri", root_ + "/model"}, {"outputUri", out}, {"preset", {{"scheme", "W4A16"}}}}.dump();
  }

  testing::TempDir tmp_;
  std::string root_, web_, admin_;
  std::map<std::string, std::string> tokens_;
  std::unique_ptr<Server> server_;
};

TEST_F(HttpConsoleTest, StaticFilesCarrySecurityHeaders) {
  httplib::Client cli("127.0.0.1", server_->http_port());
  auto root = cli.Get("/");
  ASSERT_TRUE(root);
  EXPECT_EQ(root->status, 302);
  EXPECT_EQ(root->get_header_value("Location"), "/console/");
  auto idx = cli.Get("/console/");
  ASSERT_TRUE(idx);
  EXPECT_EQ(idx->status, 200);
  EXPECT_THAT(idx->body, HasSubstr("<title>console</title>"));
  EXPECT_THAT(idx->get_header_value("Content-Security-Policy"), HasSubstr("script-src 'self'"));
  EXPECT_THAT(idx->get_header_value("Content-Security-Policy"), Not(HasSubstr("unsafe")));
  EXPECT_EQ(idx->get_header_value("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(server_->web_dir(), fs::canonical(web_).string());
  for (const char* p : {"/console/../data/admin.token", "/console/%2e%2e/data/admin.token", "/console/..%2fdata/admin.token"}) {
    auto r = cli.Get(p);
    ASSERT_TRUE(r) << p;
    EXPECT_NE(r->status, 200) << p;
    EXPECT_THAT(r->body, Not(HasSubstr("llmc_"))) << p;
  }
  // Error answers carry the headers too.
  auto api = cli.Get("/api/v1/jobs");
  ASSERT_TRUE(api);
  EXPECT_EQ(api->status, 401);
  EXPECT_EQ(api->get_header_value("X-Content-Type-Options"), "nosniff");
  EXPECT_EQ(api->get_header_value("Cache-Control"), "no-store");
}

TEST_F(HttpConsoleTest, EveryApiRouteNeedsAToken) {
  httplib::Client cli("127.0.0.1", server_->http_port());
  for (const char* p : {"/api/v1/jobs", "/api/v1/jobs/job-x", "/api/v1/jobs/job-x/events", "/api/v1/workers",
                        "/api/v1/whoami", "/api/v1/methods", "/api/v1/jobs:stream"}) {
    auto r = cli.Get(p);
    ASSERT_TRUE(r) << p;
    EXPECT_EQ(r->status, 401) << p;
  }
  for (const char* p : {"/api/v1/jobs", "/api/v1/jobs:validate", "/api/v1/jobs/job-x:cancel"}) {
    auto r = cli.Post(p, "{}", "application/json");
    ASSERT_TRUE(r) << p;
    EXPECT_EQ(r->status, 401) << p;
  }
  // A worker token is not an API token.
  auto w = cli.Get("/api/v1/whoami", {{"Authorization", "Bearer " + ReadLine(tmp_.path() + "/data/worker.token")}});
  ASSERT_TRUE(w);
  EXPECT_EQ(w->status, 403);
  auto h = cli.Get("/healthz");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
}

TEST_F(HttpConsoleTest, WhoamiMethodsAndValidateWithTheField) {
  httplib::Client cli("127.0.0.1", server_->http_port());
  auto me = cli.Get("/api/v1/whoami", Auth("av"));
  ASSERT_TRUE(me);
  ASSERT_EQ(me->status, 200) << me->body;
  auto j = nlohmann::json::parse(me->body);
  EXPECT_EQ(j["tenant"], "a");
  EXPECT_EQ(j["role"], "viewer");
  EXPECT_EQ(j["canSubmit"], false);
  auto m = cli.Get("/api/v1/methods", Auth("a"));
  ASSERT_TRUE(m);
  EXPECT_THAT(m->body, HasSubstr("\"W4A16\""));
  EXPECT_THAT(m->body, HasSubstr("\"gptq\""));

  auto ok = cli.Post("/api/v1/jobs:validate", Auth("a"), absl::StrCat("{\"spec\":", Spec(root_ + "/out"), "}"),
                     "application/json");
  ASSERT_TRUE(ok);
  ASSERT_EQ(ok->status, 200) << ok->body;
  EXPECT_THAT(nlohmann::json::parse(ok->body)["method"].get<std::string>(), HasSubstr("W4A16"));
  auto bad = cli.Post("/api/v1/jobs:validate", Auth("a"), absl::StrCat("{\"spec\":", Spec("/etc/out"), "}"),
                      "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 403);
  auto e = nlohmann::json::parse(bad->body);
  EXPECT_EQ(e["field"], "spec.output_uri");
  EXPECT_THAT(e["message"].get<std::string>(), HasSubstr("outside"));
  // A viewer may validate but not create.
  auto v = cli.Post("/api/v1/jobs:validate", Auth("av"), absl::StrCat("{\"spec\":", Spec(root_ + "/out"), "}"),
                    "application/json");
  ASSERT_TRUE(v);
  EXPECT_EQ(v->status, 200);
  auto c = cli.Post("/api/v1/jobs", Auth("av"), absl::StrCat("{\"requestId\":\"r\",\"spec\":", Spec(root_ + "/out"), "}"),
                    "application/json");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->status, 403);
}

// Bodies over 4 MiB get 413 (from Content-Length before the body is read, or once a chunked body passes the limit)
// and nothing is created; a known path asked with another method gets 405 naming the one it takes.
TEST_F(HttpConsoleTest, OversizedBodiesAndWrongMethodsAreRefused) {
  ::signal(SIGPIPE, SIG_IGN);  // the server may close while the client still writes the body
  // A raw request: the headers, then body pieces for as long as the server reads them; the status line the server
  // answered (or "" if it closed without one).
  auto send_raw = [&](const std::string& head, const std::string& piece, size_t max_body, const std::string& tail) {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(server_->http_port()));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(::send(fd, head.data(), head.size(), MSG_NOSIGNAL), static_cast<ssize_t>(head.size()));
    std::string reply;
    char buf[4096];
    for (size_t sent = 0; sent <= max_body;) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, sent == 0 ? 200 : 0) == 1) break;  // the server answers
      if (::send(fd, piece.data(), piece.size(), MSG_NOSIGNAL) <= 0) break;
      sent += piece.size();
    }
    (void)::send(fd, tail.data(), tail.size(), MSG_NOSIGNAL);
    pollfd p{fd, POLLIN, 0};
    while (::poll(&p, 1, 5000) == 1) {
      ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
      if (n <= 0) break;
      reply.append(buf, static_cast<size_t>(n));
      if (reply.find("\r\n") != std::string::npos) break;
    }
    ::close(fd);
    return reply.substr(0, reply.find("\r\n"));
  };
  const std::string auth = "Authorization: Bearer " + tokens_["a"] + "\r\n";
  // Content-Length over the limit: refused before any of the body is sent.
  EXPECT_EQ(send_raw(absl::StrCat("POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\n", auth,
                                  "Content-Type: application/json\r\nContent-Length: ", kMaxRequestBytes + 1, "\r\n\r\n"),
                     "", 0, ""),
            "HTTP/1.1 413 Content Too Large");
  // A chunked body: refused once it passes the limit (the rest of it is read and dropped).
  const std::string chunk = absl::StrCat(absl::Hex(64 << 10), "\r\n", std::string(64 << 10, ' '), "\r\n");
  EXPECT_EQ(send_raw(absl::StrCat("POST /api/v1/jobs:validate HTTP/1.1\r\nHost: x\r\n", auth,
                                  "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"),
                     chunk, static_cast<size_t>(kMaxRequestBytes) + (256 << 10), "0\r\n\r\n"),
            "HTTP/1.1 413 Content Too Large");
  httplib::Client cli("127.0.0.1", server_->http_port());
  cli.set_read_timeout(10, 0);
  auto list = cli.Get("/api/v1/jobs", Auth("a"));
  ASSERT_TRUE(list);
  EXPECT_EQ(list->status, 200);
  EXPECT_THAT(list->body, Not(HasSubstr("\"id\"")));
  auto wrong = cli.Delete("/api/v1/jobs", Auth("a"));
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 405);
  EXPECT_EQ(wrong->get_header_value("Allow"), "GET, POST");
  auto get_cancel = cli.Get("/api/v1/jobs/job-1:cancel", Auth("a"));
  ASSERT_TRUE(get_cancel);
  EXPECT_EQ(get_cancel->status, 405);
  // %00 is not decoded into a path: no file is found by cutting the name at it.
  auto nul = cli.Get("/console/index.html%00.js");
  ASSERT_TRUE(nul);
  EXPECT_EQ(nul->status, 404);
}

TEST_F(HttpConsoleTest, StreamSendsTheCallersJobChangesOnly) {
  const int port = server_->http_port();
  std::atomic<bool> stop{false};
  std::string got;
  std::mutex mu;
  std::thread reader([&] {
    httplib::Client cli("127.0.0.1", port);
    cli.set_read_timeout(10, 0);
    cli.Get("/api/v1/jobs:stream", Auth("a"), [&](const char* data, size_t n) {
      std::lock_guard<std::mutex> l(mu);
      got.append(data, n);
      return !stop.load();
    });
  });
  auto wait_for = [&](const std::string& what) {
    for (int i = 0; i < 100; ++i) {
      {
        std::lock_guard<std::mutex> l(mu);
        if (got.find(what) != std::string::npos) return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return false;
  };
  ASSERT_TRUE(wait_for("event: hello")) << got;
  httplib::Client cli("127.0.0.1", port);
  auto jb = cli.Post("/api/v1/jobs", Auth("b"), absl::StrCat("{\"requestId\":\"rb\",\"spec\":", Spec(root_ + "/outb"), "}"),
                     "application/json");
  ASSERT_TRUE(jb);
  ASSERT_EQ(jb->status, 200) << jb->body;
  auto ja = cli.Post("/api/v1/jobs", Auth("a"), absl::StrCat("{\"requestId\":\"ra\",\"spec\":", Spec(root_ + "/outa"), "}"),
                     "application/json");
  ASSERT_TRUE(ja);
  ASSERT_EQ(ja->status, 200) << ja->body;
  const std::string id_a = nlohmann::json::parse(ja->body)["id"], id_b = nlohmann::json::parse(jb->body)["id"];
  EXPECT_TRUE(wait_for(absl::StrCat("\"id\":\"", id_a, "\""))) << got;
  auto cancel = cli.Post(absl::StrCat("/api/v1/jobs/", id_a, ":cancel"), Auth("a"), "", "application/json");
  ASSERT_TRUE(cancel);
  EXPECT_TRUE(wait_for("\"state\":\"CANCELLED\"")) << got;
  stop = true;
  // The server ends the stream at shutdown even while the client still reads.
  server_->Shutdown();
  reader.join();
  std::lock_guard<std::mutex> l(mu);
  EXPECT_THAT(got, HasSubstr("event: job\ndata: {"));
  EXPECT_THAT(got, Not(HasSubstr(id_b)));
  server_.reset();
}

TEST(HttpConsoleOptionsTest, MetricsAuthAndAMissingWebDir) {
  testing::TempDir tmp;
  ServerOptions o;
  o.data_dir = tmp.path() + "/data";
  o.listen = "127.0.0.1:0";
  o.http_listen = "127.0.0.1:0";
  // A --web-dir that is not a console folder stops the start, naming the flag.
  o.web_dir = tmp.path() + "/no-such-web";
  auto bad = Server::Start(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("--web-dir"));
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("no-such-web"));

  o.web_dir.clear();
  o.data_dir = tmp.path() + "/data2";
  o.metrics_auth = true;
  auto s = Server::Start(o);
  ASSERT_TRUE(s.ok()) << s.status();
  httplib::Client cli("127.0.0.1", (*s)->http_port());
  auto open = cli.Get("/metrics");
  ASSERT_TRUE(open);
  EXPECT_EQ(open->status, 401);
  auto with = cli.Get("/metrics", {{"Authorization", "Bearer " + ReadLine(o.data_dir + "/admin.token")}});
  ASSERT_TRUE(with);
  EXPECT_EQ(with->status, 200);
  EXPECT_THAT(with->body, HasSubstr("llmc_http_requests_total"));
  auto health = cli.Get("/healthz");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  // The test binary's BIN/../share/llmc/web may or may not hold the console; either it is served or /console/
  // answers 404 saying why.
  auto console = cli.Get("/console/");
  ASSERT_TRUE(console);
  if ((*s)->web_dir().empty()) {
    EXPECT_EQ(console->status, 404);
    EXPECT_THAT(console->body, HasSubstr("not installed"));
  } else {
    EXPECT_EQ(console->status, 200);
  }
  (*s)->Shutdown();
}

// The HTTP side on an IPv6 address given in brackets ("[::1]:0"), and limits out of range refused naming the flags.
TEST(HttpConsoleOptionsTest, Ipv6AddressAndConnectionLimits) {
  testing::TempDir tmp;
  ServerOptions o;
  o.data_dir = tmp.path() + "/data";
  o.listen = "127.0.0.1:0";
  o.http_listen = "127.0.0.1:0";
  o.http_max_connections = 4;
  o.http_max_connections_per_client = 8;
  auto bad = Server::Start(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("--http-max-connections-per-client (8)"));

  int probe = ::socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  const bool v6 = probe >= 0 && ::bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  if (probe >= 0) ::close(probe);
  if (!v6) GTEST_SKIP() << "no IPv6 loopback on this machine";
  o.data_dir = tmp.path() + "/data2";
  o.http_max_connections = 256;
  o.http_max_connections_per_client = 32;
  o.http_listen = "[::1]:0";
  auto s = Server::Start(o);
  ASSERT_TRUE(s.ok()) << s.status();
  httplib::Client cli("::1", (*s)->http_port());
  auto health = cli.Get("/healthz");
  ASSERT_TRUE(health) << httplib::to_string(health.error());
  EXPECT_EQ(health->status, 200);
  (*s)->Shutdown();
}

// A bad --http-listen, or an HTTP port in use, stops the start naming the flag, before the gRPC port is taken: the
// same data directory and gRPC port start cleanly right after.
TEST(HttpConsoleOptionsTest, BadOrTakenHttpListenStopsTheStart) {
  testing::TempDir tmp;
  const int grpc_port = testing::FreePort();
  ASSERT_GT(grpc_port, 0);
  ServerOptions o;
  o.data_dir = tmp.path() + "/data";
  o.listen = absl::StrCat("127.0.0.1:", grpc_port);
  o.http_listen = "127.0.0.1";
  auto bad = Server::Start(o);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), HasSubstr("--http-listen 127.0.0.1: give HOST:PORT"));

  // An HTTP port someone else listens on.
  int taken = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(taken, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  ASSERT_EQ(::bind(taken, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(taken, 1), 0);
  ASSERT_EQ(::getsockname(taken, reinterpret_cast<sockaddr*>(&a), &len), 0);
  o.http_listen = absl::StrCat("127.0.0.1:", ntohs(a.sin_port));
  auto busy = Server::Start(o);
  ::close(taken);
  ASSERT_FALSE(busy.ok());

  o.http_listen = "127.0.0.1:0";
  auto s = Server::Start(o);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->grpc_port(), grpc_port);
  (*s)->Shutdown();
}

}  // namespace
}  // namespace llmc::server
