// A throwaway Ceph RGW for integration tests, started with ../shared/tools/start-rgw.sh (about 13 s) and
// stopped with stop-rgw.sh. Set LLMC_TEST_S3_ENDPOINT (and LLMC_TEST_S3_ACCESS_KEY / LLMC_TEST_S3_SECRET_KEY,
// default TESTKEY / TESTSECRET) to use a server that is already running instead.
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "storage/s3_options.h"

namespace llmc::testing {

class RgwServer {
 public:
  // Starts the server. UNAVAILABLE with the reason when it cannot run here (radosgw not installed, the
  // script missing, the monitor port taken by another test cluster); tests then skip.
  static absl::StatusOr<std::unique_ptr<RgwServer>> Start();
  ~RgwServer();  // stops it (only a server it started) and removes its directory

  const std::string& endpoint() const { return endpoint_; }  // http://127.0.0.1:PORT
  const std::string& access_key() const { return access_key_; }
  const std::string& secret_key() const { return secret_key_; }
  // Client settings for this server: endpoint, path-style, its test user's credentials, short backoff.
  storage::S3Options Options() const;

 private:
  RgwServer() = default;
  std::string endpoint_;
  std::string access_key_ = "TESTKEY";
  std::string secret_key_ = "TESTSECRET";
  std::string dir_;        // the mkdtemp directory (ours to remove)
  std::string stop_script_;
};

}  // namespace llmc::testing
