#include "tests/support/rgw_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "tests/support/process.h"
#include "tests/support/test_paths.h"

namespace llmc::testing {

using storage::AwsCredentials;
using storage::S3Addressing;

namespace fs = std::filesystem;

namespace {

bool CanBind(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  ::close(fd);
  return ok;
}

bool OnPath(const char* program) {
  return std::system(absl::StrCat("command -v ", program, " >/dev/null 2>&1").c_str()) == 0;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RgwServer>> RgwServer::Start() {
  std::unique_ptr<RgwServer> s(new RgwServer());
  if (const char* ep = std::getenv("LLMC_TEST_S3_ENDPOINT"); ep && *ep) {
    s->endpoint_ = ep;
    if (const char* k = std::getenv("LLMC_TEST_S3_ACCESS_KEY")) s->access_key_ = k;
    if (const char* k = std::getenv("LLMC_TEST_S3_SECRET_KEY")) s->secret_key_ = k;
    return s;
  }
  if (!OnPath("radosgw") || !OnPath("ceph-mon") || !OnPath("ceph-osd"))
    return absl::UnavailableError("radosgw/ceph-mon/ceph-osd are not installed (apt-get install radosgw ceph-mon "
                                  "ceph-osd ceph-common, as scripts/setup.sh does)");
  std::string tools = llmc::testing::Shared("tools");
  std::string start = tools + "/start-rgw.sh";
  if (!fs::exists(start)) return absl::UnavailableError(absl::StrCat(start, " not found (../shared is absent)"));
  s->stop_script_ = tools + "/stop-rgw.sh";
  // start-rgw.sh's monitor always listens on 127.0.0.1:3300: wait for another test cluster to finish.
  for (int i = 0; !CanBind(3300); ++i) {
    if (i == 300)
      return absl::UnavailableError("port 3300 (the Ceph monitor start-rgw.sh uses) stayed busy for 5 minutes: "
                                    "another test cluster is running; stop it or set LLMC_TEST_S3_ENDPOINT");
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  std::string tmpl = (fs::temp_directory_path() / "llmc-rgw-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) return absl::InternalError("mkdtemp failed");
  s->dir_ = tmpl;
  int port = FreePort();
  std::string log = s->dir_ + "/start.log";
  std::string cmd = absl::StrCat("timeout 180 bash ", start, " ", s->dir_, "/ceph ", port, " >", log, " 2>&1");
  int rc = std::system(cmd.c_str());
  if (rc != 0) {
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    return absl::UnavailableError(absl::StrCat("start-rgw.sh failed (", rc, "): ", ss.str()));
  }
  s->endpoint_ = absl::StrCat("http://127.0.0.1:", port);
  return s;
}

RgwServer::~RgwServer() {
  if (!stop_script_.empty() && !dir_.empty())
    (void)std::system(absl::StrCat("bash ", stop_script_, " ", dir_, "/ceph >/dev/null 2>&1").c_str());
  if (!dir_.empty()) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

storage::S3Options RgwServer::Options() const {
  storage::S3Options o;
  o.endpoint = endpoint_;
  o.addressing = S3Addressing::kPath;
  o.region = "us-east-1";
  AwsCredentials c;
  c.access_key_id = access_key_;
  c.secret_access_key = secret_key_;
  c.source = "the test user of start-rgw.sh";
  o.credentials = c;
  o.retry.initial_backoff = absl::Milliseconds(50);
  o.retry.max_backoff = absl::Seconds(1);
  return o;
}

}  // namespace llmc::testing
