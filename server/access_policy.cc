#include "server/access_policy.h"

#include <sys/stat.h>

#include <cerrno>
#include <filesystem>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "common/util.h"
#include "server/spec_limits.h"

namespace llmc::server {

namespace fs = std::filesystem;

namespace {

// Resolves symlinks of the existing part of a local location.
storage::StorageUri Canonical(storage::StorageUri u) {
  if (!u.is_file()) return u;
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::path(u.path), ec);
  if (!ec) {
    std::string s = p.lexically_normal().string();
    while (s.size() > 1 && s.back() == '/') s.pop_back();
    u.path = s;
  }
  return u;
}

absl::StatusOr<storage::StorageUri> Parse(absl::string_view field, absl::string_view uri) {
  if (uri.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": empty; give an absolute path, file:///dir or s3://bucket/prefix"));
  // A URI of another scheme (gs://, http://) is named as such, not as a relative path.
  const size_t colon = uri.find("://");
  if (colon != absl::string_view::npos && colon > 0 && !storage::IsS3Uri(uri) &&
      !absl::StartsWithIgnoreCase(uri, "file:") &&
      uri.substr(0, colon).find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.") ==
          absl::string_view::npos)
    return absl::InvalidArgumentError(absl::StrCat(field, ": unsupported scheme ", Quote(uri.substr(0, colon)),
                                                   "; use an absolute path, file:///abs/dir or s3://bucket/prefix"));
  if (!storage::IsS3Uri(uri) && !absl::StartsWith(uri, "/") && !absl::StartsWithIgnoreCase(uri, "file:"))
    return absl::InvalidArgumentError(absl::StrCat(field, ": ", Quote(uri), " is a relative path; give an absolute path or a "
                                                   "file:// URI (the CLI makes paths absolute for you)"));
  auto u = storage::ParseStorageUri(uri);
  if (!u.ok()) {
    // The parser's message starts with the URI: quote a long one bounded.
    absl::string_view m = u.status().message();
    if (uri.size() > kMaxQuotedBytes && absl::StartsWith(m, uri))
      return absl::Status(u.status().code(), absl::StrCat(field, ": ", Quote(uri), m.substr(uri.size())));
    return absl::Status(u.status().code(), absl::StrCat(field, ": ", m));
  }
  return Canonical(*u);
}

}  // namespace

bool UnderRoot(const storage::StorageUri& inner, const storage::StorageUri& root) {
  if (inner.scheme != root.scheme) return false;
  if (inner.is_s3()) {
    if (inner.bucket != root.bucket) return false;
    if (root.prefix.empty()) return true;
    return inner.prefix == root.prefix || absl::StartsWith(inner.prefix, root.prefix + "/");
  }
  if (root.path == "/") return true;
  return inner.path == root.path || absl::StartsWith(inner.path, root.path + "/");
}

absl::StatusOr<AccessPolicy> AccessPolicy::Create(const std::vector<std::string>& roots,
                                                  const std::vector<std::string>& input_roots,
                                                  const std::vector<std::string>& denied) {
  AccessPolicy p;
  p.raw_rw_ = roots;
  p.raw_ro_ = input_roots;
  for (const auto& d : denied) {
    LLMC_ASSIGN_OR_RETURN(storage::StorageUri u, Parse("denied directory", d));
    if (!u.is_file()) return absl::InvalidArgumentError(absl::StrCat("denied directory ", d, ": not a local path"));
    p.denied_.push_back(u.path);
  }
  for (int pass = 0; pass < 2; ++pass) {
    for (const auto& r : pass == 0 ? roots : input_roots) {
      LLMC_ASSIGN_OR_RETURN(storage::StorageUri u, Parse("allowed root", r));
      if (u.is_file() && !fs::is_directory(u.path))
        return absl::InvalidArgumentError(absl::StrCat("allowed root ", r, ": not a directory; create it first"));
      (pass == 0 ? p.rw_ : p.ro_).push_back(u);
      if (u.is_file()) (pass == 0 ? p.local_rw_ : p.local_ro_).push_back(u.path);
    }
  }
  return p;
}

absl::StatusOr<storage::StorageUri> AccessPolicy::Check(absl::string_view field, absl::string_view uri, bool write) const {
  LLMC_ASSIGN_OR_RETURN(storage::StorageUri u, Parse(field, uri));
  if (u.is_file()) {
    for (const auto& d : denied_) {
      storage::StorageUri du;
      du.scheme = u.scheme;
      du.path = d;
      if (!UnderRoot(u, du)) continue;
      // Allowed only through a root that itself lies inside the denied directory (DATA_DIR/storage).
      bool exempt = false;
      for (const auto& r : rw_)
        if (r.is_file() && UnderRoot(r, du) && UnderRoot(u, r)) exempt = true;
      for (const auto& r : ro_)
        if (!write && r.is_file() && UnderRoot(r, du) && UnderRoot(u, r)) exempt = true;
      if (!exempt)
        return absl::PermissionDeniedError(absl::StrCat(
            field, ": ", Truncated(u.ToString()), " is in the service's data directory (tokens and the job store), "
            "which jobs may not read or write; use a location outside it"));
    }
  }
  for (const auto& r : rw_)
    if (UnderRoot(u, r)) return u;
  if (!write)
    for (const auto& r : ro_)
      if (UnderRoot(u, r)) return u;
  return absl::PermissionDeniedError(absl::StrCat(field, ": ", Truncated(u.ToString()), " is outside the allowed ",
                                                  write ? "output" : "storage", " roots (", Describe(),
                                                  "); use a location under one of them or ask the operator to add "
                                                  "--allowed-root"));
}

absl::StatusOr<storage::StorageUri> AccessPolicy::CheckInput(absl::string_view field, absl::string_view uri) const {
  return Check(field, uri, false);
}

absl::StatusOr<storage::StorageUri> AccessPolicy::CheckOutput(absl::string_view field, absl::string_view uri) const {
  return Check(field, uri, true);
}

absl::Status AccessPolicy::SetTenantRoots(const TenantRootOptions& options) {
  for (int pass = 0; pass < 2; ++pass)
    for (const auto& r : pass == 0 ? options.shared_roots : options.shared_input_roots) {
      LLMC_ASSIGN_OR_RETURN(storage::StorageUri u, Parse(pass == 0 ? "--shared-root" : "--shared-input-root", r));
      if (u.is_file() && !fs::is_directory(u.path))
        return absl::InvalidArgumentError(absl::StrCat("shared root ", r, ": not a directory; create it first"));
    }
  tenant_ = options;
  return absl::OkStatus();
}

absl::StatusOr<AccessPolicy> AccessPolicy::ForTenant(absl::string_view tenant) const {
  if (!tenant_.per_tenant && tenant_.shared_roots.empty() && tenant_.shared_input_roots.empty()) return *this;
  std::vector<std::string> rw, ro;
  if (tenant_.per_tenant) {
    if (!IsPortableName(tenant, 128))
      return absl::FailedPreconditionError(absl::StrCat("tenant ", Quote(tenant), " cannot name its own storage ",
                                                        "directory (per-tenant roots); ask the operator for a tenant ",
                                                        "name of letters, digits, '.', '_' and '-' not starting with '.'"));
    for (int pass = 0; pass < 2; ++pass)
      for (const auto& r : pass == 0 ? rw_ : ro_) {
        storage::StorageUri t = r;
        if (t.is_s3()) {
          t.prefix = t.prefix.empty() ? std::string(tenant) : absl::StrCat(t.prefix, "/", tenant);
        } else {
          t.path = t.path == "/" ? absl::StrCat("/", tenant) : absl::StrCat(t.path, "/", tenant);
          std::error_code ec;
          // The tenant's own directory under the operator's root: created on first use, never through a link.
          if (::mkdir(t.path.c_str(), 0755) != 0 && errno != EEXIST)
            return absl::UnavailableError(absl::StrCat("cannot create the tenant's directory ", t.path, ": ",
                                                       ErrnoString(errno)));
          if (fs::is_symlink(t.path, ec) || !fs::is_directory(t.path, ec))
            return absl::FailedPreconditionError(absl::StrCat("the tenant's directory ", t.path,
                                                              " is not a plain directory; ask the operator"));
        }
        (pass == 0 ? rw : ro).push_back(t.ToString());
      }
  } else {
    rw = raw_rw_;
    ro = raw_ro_;
  }
  rw.insert(rw.end(), tenant_.shared_roots.begin(), tenant_.shared_roots.end());
  ro.insert(ro.end(), tenant_.shared_input_roots.begin(), tenant_.shared_input_roots.end());
  return Create(rw, ro, denied_);
}

std::string AccessPolicy::Describe() const {
  std::vector<std::string> a, b;
  for (const auto& r : rw_) a.push_back(r.ToString());
  for (const auto& r : ro_) b.push_back(r.ToString());
  std::string s = a.empty() ? "none" : absl::StrJoin(a, ", ");
  if (!b.empty()) absl::StrAppend(&s, "; inputs only: ", absl::StrJoin(b, ", "));
  return s;
}

}  // namespace llmc::server
