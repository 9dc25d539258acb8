#include "proto/channel.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/util.h"

namespace llmc::rpc {

std::string ResolveServer(const std::string& server) {
  if (!server.empty()) return server;
  if (const char* e = std::getenv("LLMC_SERVER"); e && *e) return e;
  return kDefaultServer;
}

std::string ResolveToken(const std::string& token) {
  if (!token.empty()) return token;
  if (const char* e = std::getenv("LLMC_TOKEN"); e && *e) return e;
  return "";
}

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& server, const std::string& ca_cert) {
  std::string ca = ca_cert;
  if (ca.empty())
    if (const char* e = std::getenv("LLMC_CA_CERT"); e && *e) ca = e;
  if (ca.empty()) return grpc::CreateChannel(ResolveServer(server), grpc::InsecureChannelCredentials());
  std::ifstream in(ca);
  std::stringstream ss;
  ss << in.rdbuf();
  grpc::SslCredentialsOptions o;
  o.pem_root_certs = ss.str();
  return grpc::CreateChannel(ResolveServer(server), grpc::SslCredentials(o));
}

void AddAuth(grpc::ClientContext* ctx, const std::string& token) {
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read the token file: ", ErrnoString(errno)));
  std::string line;
  std::getline(in, line);
  std::string t(absl::StripAsciiWhitespace(line));
  if (t.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": the token file is empty"));
  return t;
}

absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
}

}  // namespace llmc::rpc
