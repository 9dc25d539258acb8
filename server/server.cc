#include "server/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include <spdlog/spdlog.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/util.h"
#include "storage/path_confinement.h"
#include "server/access_policy.h"
#include "server/auth.h"
#include "server/coordinator.h"
#include "server/grpc_services.h"
#include "server/http_api.h"
#include "server/job_store.h"
#include "server/metrics.h"

namespace llmc::server {

namespace fs = std::filesystem;

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot read"));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The data directory's lock (DATA_DIR/server.lock, flock): one llmc-server per data directory, and no restore
// under a running one. Held while the returned fd is open.
absl::StatusOr<storage::UniqueFd> LockDataDir(const std::string& data_dir, absl::string_view doing) {
  const std::string path = data_dir + "/server.lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  storage::UniqueFd lock(fd);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK)
      return absl::FailedPreconditionError(absl::StrCat(
          data_dir, ": another llmc-server is using this data directory; ", doing));
    return ErrnoToStatus(errno, absl::StrCat("cannot lock ", path));
  }
  return lock;
}

}  // namespace

struct Server::Impl {
  storage::UniqueFd lock;  // DATA_DIR/server.lock, held while serving
  std::unique_ptr<JobStore> store;
  MetricsRegistry registry;
  std::unique_ptr<ServiceMetrics> metrics;
  std::unique_ptr<Authenticator> auth;
  std::unique_ptr<Coordinator> coordinator;
  std::unique_ptr<CompressionService> api;
  std::unique_ptr<WorkerServiceImpl> workers;
  std::unique_ptr<grpc::Server> grpc;
  std::unique_ptr<HttpApi> http;
  int grpc_port = 0;
  bool down = false;
};

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() { Shutdown(); }
int Server::grpc_port() const { return impl_->grpc_port; }
int Server::http_port() const { return impl_->http ? impl_->http->port() : 0; }
std::string Server::web_dir() const { return impl_->http ? impl_->http->web_dir() : ""; }

void Server::Shutdown() {
  if (impl_->down) return;
  impl_->down = true;
  if (impl_->http) impl_->http->Stop();
  impl_->coordinator->Stop();  // wakes watchers and closes worker streams
  impl_->grpc->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  impl_->grpc->Wait();
}

absl::StatusOr<std::unique_ptr<Server>> Server::Start(const ServerOptions& o) {
  auto impl = std::make_unique<Impl>();
  std::error_code ec;
  fs::create_directories(o.data_dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("--data-dir ", o.data_dir, ": cannot create: ", ec.message()));
  const std::string data_dir = fs::canonical(o.data_dir, ec).string();
  fs::permissions(data_dir, fs::perms::owner_all, fs::perm_options::replace, ec);
  fs::create_directories(data_dir + "/storage", ec);
  LLMC_ASSIGN_OR_RETURN(impl->lock, LockDataDir(data_dir, "stop it first, or give another --data-dir"));
  LLMC_ASSIGN_OR_RETURN(impl->store, JobStore::Open(data_dir + "/jobs.db"));
  bool created_admin = false;
  LLMC_RETURN_IF_ERROR(EnsureBootstrapTokens(impl->store.get(), data_dir, &created_admin));
  if (created_admin)
    spdlog::info("wrote the admin token to {}/admin.token (mode 0600); use it with --token or LLMC_TOKEN", data_dir);
  else
    spdlog::info("admin token: {}/admin.token; worker token: {}/worker.token", data_dir, data_dir);

  std::vector<std::string> roots = o.allowed_roots;
  roots.push_back(data_dir + "/storage");
  CoordinatorOptions co;
  // The data directory (tokens, the job store) is never a job's, even when a root contains it.
  LLMC_ASSIGN_OR_RETURN(co.policy, AccessPolicy::Create(roots, o.input_roots, {data_dir}));
  LLMC_RETURN_IF_ERROR(co.policy.SetTenantRoots(o.tenant_roots));
  if (o.quotas.max_active_jobs < 0 || o.quotas.max_gpus < 0 || o.quotas.max_spec_bytes < 0)
    return absl::InvalidArgumentError(
        "--tenant-max-active-jobs, --tenant-max-gpus and --tenant-max-spec-bytes must be 0 (no quota) or positive");
  co.quotas = o.quotas;
  co.lease_ms = o.lease_ms;
  co.max_attempts = o.max_attempts;
  if (o.limits.max_num_samples < 1 || o.limits.max_seq_len < 1 || o.limits.max_calibration_tokens < 1)
    return absl::InvalidArgumentError("--max-num-samples, --max-seq-len and --max-calibration-tokens must be positive");
  co.limits = o.limits;
  spdlog::info("allowed storage roots: {}{}", co.policy.Describe(),
               o.tenant_roots.per_tenant ? " (each tenant's jobs: ROOT/TENANT of each, plus the shared roots)" : "");
  impl->metrics = std::make_unique<ServiceMetrics>(&impl->registry);
  impl->auth = std::make_unique<Authenticator>(impl->store.get());
  impl->coordinator = std::make_unique<Coordinator>(std::move(co), impl->store.get(), impl->metrics.get());
  LLMC_RETURN_IF_ERROR(impl->coordinator->Start());
  impl->api = std::make_unique<CompressionService>(impl->coordinator.get(), impl->auth.get(), impl->metrics.get());
  impl->workers = std::make_unique<WorkerServiceImpl>(impl->coordinator.get(), impl->auth.get(), impl->metrics.get());

  // The HTTP side first: a bad HTTP option or a taken port stops the start before any gRPC port is open.
  if (!o.http_listen.empty()) {
    std::string host = o.http_listen;
    int port = 0;
    auto colon = o.http_listen.rfind(':');
    if (colon == std::string::npos || !absl::SimpleAtoi(o.http_listen.substr(colon + 1), &port))
      return absl::InvalidArgumentError(absl::StrCat("--http-listen ", o.http_listen, ": give HOST:PORT"));
    host = o.http_listen.substr(0, colon);
    HttpOptions ho;
    ho.web_dir = o.web_dir;
    ho.metrics_auth = o.metrics_auth;
    ho.max_connections = o.http_max_connections;
    ho.max_connections_per_client = o.http_max_connections_per_client;
    impl->http = std::make_unique<HttpApi>(impl->coordinator.get(), impl->auth.get(), impl->metrics.get(), ho);
    LLMC_RETURN_IF_ERROR(impl->http->Start(host, port));
    spdlog::info("HTTP (/metrics, /healthz, /api/v1) on {}:{}", host, impl->http->port());
    if (!impl->http->web_dir().empty())
      spdlog::info("web console on http://{}:{}/console/ (files in {})", host, impl->http->port(), impl->http->web_dir());
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder b;
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!o.tls_cert.empty() || !o.tls_key.empty()) {
    if (o.tls_cert.empty() || o.tls_key.empty())
      return absl::InvalidArgumentError("--tls-cert and --tls-key go together");
    grpc::SslServerCredentialsOptions so;
    LLMC_ASSIGN_OR_RETURN(std::string cert, ReadFile(o.tls_cert));
    LLMC_ASSIGN_OR_RETURN(std::string key, ReadFile(o.tls_key));
    so.pem_key_cert_pairs.push_back({key, cert});
    creds = grpc::SslServerCredentials(so);
  }
  b.AddListeningPort(o.listen, creds, &impl->grpc_port);
  b.RegisterService(impl->api.get());
  b.RegisterService(impl->workers.get());
  b.SetMaxReceiveMessageSize(kMaxRequestBytes);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<MalformedRequestInterceptorFactory>());
  b.experimental().SetInterceptorCreators(std::move(interceptors));
  impl->grpc = b.BuildAndStart();
  if (!impl->grpc || impl->grpc_port == 0)
    return absl::UnavailableError(absl::StrCat("--listen ", o.listen, ": cannot listen (in use?); choose another port"));
  impl->grpc->GetHealthCheckService()->SetServingStatus(true);
  spdlog::info("gRPC API on {} (port {}){}", o.listen, impl->grpc_port, o.tls_cert.empty() ? "" : " with TLS");
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

absl::Status BackupDataDir(const std::string& data_dir, const std::string& output) {
  return BackupStore(data_dir + "/jobs.db", output);
}

absl::StatusOr<std::vector<std::string>> RestoreDataDir(const std::string& data_dir, const std::string& from) {
  std::error_code ec;
  if (!fs::is_directory(data_dir, ec))
    return absl::NotFoundError(absl::StrCat("--data-dir ", data_dir, ": no such directory"));
  LLMC_ASSIGN_OR_RETURN(storage::UniqueFd lock, LockDataDir(data_dir, "stop llmc-server before restoring"));
  return RestoreStore(data_dir + "/jobs.db", from);
}

absl::StatusOr<std::string> CreateTokenInDataDir(const std::string& data_dir, const std::string& tenant,
                                                 const std::string& role, const std::string& name) {
  if (!fs::exists(data_dir + "/jobs.db"))
    return absl::NotFoundError(absl::StrCat(data_dir, "/jobs.db: no job store; start llmc-server with --data-dir ",
                                            data_dir, " once first"));
  LLMC_ASSIGN_OR_RETURN(Role r, ParseRole(role));
  LLMC_ASSIGN_OR_RETURN(auto store, JobStore::Open(data_dir + "/jobs.db"));
  return CreateToken(store.get(), tenant, r, name);
}

}  // namespace llmc::server
