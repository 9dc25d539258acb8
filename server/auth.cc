#include "server/auth.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "proto/channel.h"
#include "common/status_macros.h"
#include "common/util.h"

namespace llmc::server {

std::string NewToken() {
  unsigned char buf[32];
  if (RAND_bytes(buf, sizeof(buf)) != 1) {
    std::ifstream r("/dev/urandom", std::ios::binary);
    r.read(reinterpret_cast<char*>(buf), sizeof(buf));
  }
  static const char* kHex = "0123456789abcdef";
  std::string s = "llmc_";
  for (unsigned char c : buf) {
    s += kHex[c >> 4];
    s += kHex[c & 15];
  }
  return s;
}

std::string TokenSha256(absl::string_view token) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_Digest(token.data(), token.size(), md, &n, EVP_sha256(), nullptr);
  static const char* kHex = "0123456789abcdef";
  std::string s;
  for (unsigned int i = 0; i < n; ++i) {
    s += kHex[md[i] >> 4];
    s += kHex[md[i] & 15];
  }
  return s;
}

absl::StatusOr<std::string> CreateToken(JobStore* store, const std::string& tenant, Role role, const std::string& name) {
  if (tenant.empty()) return absl::InvalidArgumentError("tenant: give a tenant name (e.g. --tenant team-a)");
  for (char c : tenant)
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.')
      return absl::InvalidArgumentError(absl::StrCat("tenant '", tenant, "': use letters, digits, '-', '_' and '.'"));
  // A tenant names its directory under per-tenant roots: never ".", ".." or hidden, at most 128 characters.
  if (tenant[0] == '.' || tenant.size() > 128)
    return absl::InvalidArgumentError(absl::StrCat("tenant '", tenant.substr(0, 128), "': must not start with '.' and ",
                                                   "may have at most 128 characters"));
  std::string token = NewToken();
  TokenRecord rec;
  rec.tenant = tenant;
  rec.role = role;
  rec.name = name;
  LLMC_RETURN_IF_ERROR(store->PutToken(TokenSha256(token), rec));
  return token;
}

namespace {

// Writes `content` to `path` with mode 0600 atomically (temp file + rename).
absl::Status WriteSecretFile(const std::string& path, const std::string& content) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoToStatus(errno, tmp);
  ::fchmod(fd, 0600);
  bool ok = ::write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) && ::fsync(fd) == 0;
  int err = errno;
  ::close(fd);
  if (!ok) return ErrnoToStatus(err, tmp);
  if (::rename(tmp.c_str(), path.c_str()) != 0) return ErrnoToStatus(errno, path);
  return absl::OkStatus();
}

absl::Status EnsureToken(JobStore* store, const std::string& path, const std::string& tenant, Role role,
                         const std::string& name, bool* created) {
  *created = false;
  if (std::filesystem::exists(path)) {
    LLMC_ASSIGN_OR_RETURN(std::string token, rpc::ReadTokenFile(path));
    auto rec = store->LookupToken(TokenSha256(token));
    if (rec.ok()) return absl::OkStatus();
    if (!absl::IsNotFound(rec.status())) return rec.status();
    TokenRecord r;
    r.tenant = tenant;
    r.role = role;
    r.name = name;
    return store->PutToken(TokenSha256(token), r);
  }
  std::string token = NewToken();
  TokenRecord r;
  r.tenant = tenant;
  r.role = role;
  r.name = name;
  LLMC_RETURN_IF_ERROR(store->PutToken(TokenSha256(token), r));
  LLMC_RETURN_IF_ERROR(WriteSecretFile(path, token + "\n"));
  *created = true;
  return absl::OkStatus();
}

}  // namespace

absl::Status EnsureBootstrapTokens(JobStore* store, const std::string& data_dir, bool* created_admin) {
  bool created_worker = false;
  LLMC_RETURN_IF_ERROR(EnsureToken(store, data_dir + "/admin.token", "default", Role::kAdmin, "bootstrap admin",
                                   created_admin));
  return EnsureToken(store, data_dir + "/worker.token", "default", Role::kWorker, "bootstrap worker", &created_worker);
}

absl::StatusOr<Principal> Authenticator::Authenticate(absl::string_view authorization) {
  absl::string_view v = absl::StripAsciiWhitespace(authorization);
  if (v.empty())
    return absl::UnauthenticatedError(
        "missing bearer token: send metadata 'authorization: Bearer <token>' (CLI: --token or LLMC_TOKEN; the admin "
        "token is in DATA_DIR/admin.token)");
  if (!absl::StartsWithIgnoreCase(v, "bearer "))
    return absl::UnauthenticatedError("authorization: expected 'Bearer <token>'");
  return AuthenticateToken(absl::StripAsciiWhitespace(v.substr(7)));
}

absl::StatusOr<Principal> Authenticator::AuthenticateToken(absl::string_view token) {
  if (token.empty()) return absl::UnauthenticatedError("empty bearer token");
  std::string h = TokenSha256(token);
  {
    absl::MutexLock l(&mu_);
    auto it = cache_.find(h);
    if (it != cache_.end()) return it->second;
  }
  auto rec = store_->LookupToken(h);
  if (absl::IsNotFound(rec.status()))
    return absl::UnauthenticatedError("unknown bearer token: check --token / LLMC_TOKEN (an admin creates tokens with "
                                      "`llmc-server token create`)");
  if (!rec.ok()) return absl::UnavailableError(absl::StrCat("cannot check the token: ", rec.status().message()));
  Principal p{rec->tenant, rec->role};
  absl::MutexLock l(&mu_);
  cache_[h] = p;
  return p;
}

absl::Status RequireWrite(const Principal& p, absl::string_view what) {
  if (p.role == Role::kAdmin || p.role == Role::kSubmitter) return absl::OkStatus();
  if (p.role == Role::kWorker) return RequireRead(p);
  return absl::PermissionDeniedError(absl::StrCat("role ", RoleName(p.role), " of tenant ", p.tenant, " may not ",
                                                  what, "; use a submitter or admin token"));
}

absl::Status RequireRead(const Principal& p) {
  if (p.role == Role::kWorker)
    return absl::PermissionDeniedError("a worker token may only connect workers; use a user token for the API");
  return absl::OkStatus();
}

}  // namespace llmc::server
