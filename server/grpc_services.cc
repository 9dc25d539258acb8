#include "server/grpc_services.h"

#include <chrono>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"

namespace llmc::server {

namespace {

// Records one call in the RPC metrics when it goes out of scope.
class RpcScope {
 public:
  RpcScope(ServiceMetrics* m, const char* method) : m_(m), method_(method), t0_(std::chrono::steady_clock::now()) {}
  grpc::Status Done(const absl::Status& s) {
    m_->rpcs->Inc({method_, CodeName(s.code())});
    m_->rpc_latency->Observe({method_},
                             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count());
    return ToGrpc(s);
  }

 private:
  ServiceMetrics* m_;
  const char* method_;
  std::chrono::steady_clock::time_point t0_;
};

// One worker stream's writes, serialized (gRPC allows one outstanding Write per stream). Reads stay with the
// Connect handler's thread.
class StreamWriter {
 public:
  using Stream = grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>;
  explicit StreamWriter(Stream* stream) : stream_(stream) {}
  bool Write(const v1::CoordinatorMessage& m) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock l(&mu_);
    return stream_->Write(m);
  }

 private:
  absl::Mutex mu_;
  Stream* const stream_ ABSL_PT_GUARDED_BY(mu_);
};

std::string AuthHeader(grpc::ServerContext* ctx) {
  auto it = ctx->client_metadata().find("authorization");
  if (it == ctx->client_metadata().end()) return "";
  return std::string(it->second.data(), it->second.size());
}

}  // namespace

const char* CodeName(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk: return "OK";
    case absl::StatusCode::kCancelled: return "CANCELLED";
    case absl::StatusCode::kUnknown: return "UNKNOWN";
    case absl::StatusCode::kInvalidArgument: return "INVALID_ARGUMENT";
    case absl::StatusCode::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case absl::StatusCode::kNotFound: return "NOT_FOUND";
    case absl::StatusCode::kAlreadyExists: return "ALREADY_EXISTS";
    case absl::StatusCode::kPermissionDenied: return "PERMISSION_DENIED";
    case absl::StatusCode::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case absl::StatusCode::kFailedPrecondition: return "FAILED_PRECONDITION";
    case absl::StatusCode::kAborted: return "ABORTED";
    case absl::StatusCode::kOutOfRange: return "OUT_OF_RANGE";
    case absl::StatusCode::kUnimplemented: return "UNIMPLEMENTED";
    case absl::StatusCode::kInternal: return "INTERNAL";
    case absl::StatusCode::kUnavailable: return "UNAVAILABLE";
    case absl::StatusCode::kDataLoss: return "DATA_LOSS";
    case absl::StatusCode::kUnauthenticated: return "UNAUTHENTICATED";
    default: return "UNKNOWN";
  }
}

namespace {

class MalformedRequestInterceptor final : public grpc::experimental::Interceptor {
 public:
  void Intercept(grpc::experimental::InterceptorBatchMethods* m) override {
    if (m->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      grpc::Status s = m->GetSendStatus();
      if (s.error_code() == grpc::StatusCode::INTERNAL && s.error_message().empty())
        m->ModifySendStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                         "the request is not a valid llmc.v1 message (a string field that is not "
                                         "valid UTF-8?); send UTF-8 text in every string field"));
    }
    m->Proceed();
  }
};

}  // namespace

grpc::experimental::Interceptor* MalformedRequestInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo*) {
  return new MalformedRequestInterceptor;
}

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

absl::StatusOr<Principal> CompressionService::Caller(grpc::ServerContext* ctx) {
  return auth_->Authenticate(AuthHeader(ctx));
}

grpc::Status CompressionService::CreateJob(grpc::ServerContext* ctx, const v1::CreateJobRequest* req, v1::Job* out) {
  RpcScope scope(m_, "CreateJob");
  auto p = Caller(ctx);
  if (!p.ok()) return scope.Done(p.status());
  auto r = c_->CreateJob(*p, *req);
  if (r.ok()) *out = std::move(*r);
  return scope.Done(r.status());
}

grpc::Status CompressionService::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* out) {
  RpcScope scope(m_, "GetJob");
  auto p = Caller(ctx);
  if (!p.ok()) return scope.Done(p.status());
  auto r = c_->GetJob(*p, req->id());
  if (r.ok()) *out = std::move(*r);
  return scope.Done(r.status());
}

grpc::Status CompressionService::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                                          v1::ListJobsResponse* out) {
  RpcScope scope(m_, "ListJobs");
  auto p = Caller(ctx);
  if (!p.ok()) return scope.Done(p.status());
  auto r = c_->ListJobs(*p, *req);
  if (r.ok()) *out = std::move(*r);
  return scope.Done(r.status());
}

grpc::Status CompressionService::CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* out) {
  RpcScope scope(m_, "CancelJob");
  auto p = Caller(ctx);
  if (!p.ok()) return scope.Done(p.status());
  auto r = c_->CancelJob(*p, req->id());
  if (r.ok()) *out = std::move(*r);
  return scope.Done(r.status());
}

grpc::Status CompressionService::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                          grpc::ServerWriter<v1::JobEvent>* writer) {
  RpcScope scope(m_, "WatchJob");
  auto p = Caller(ctx);
  if (!p.ok()) return scope.Done(p.status());
  absl::Status s = c_->WatchJob(
      *p, *req, [&](const v1::JobEvent& e) { return writer->Write(e); }, [&] { return ctx->IsCancelled(); });
  return scope.Done(s);
}

grpc::Status CompressionService::ValidateJob(grpc::ServerContext* ctx, const v1::ValidateJobRequest* req,
                                             v1::ValidateJobResponse* out) {
  RpcScope scope(m_, "ValidateJob");
  auto p = Caller(ctx);
  if (!p.ok()) return scope.Done(p.status());
  auto r = c_->ValidateJob(*p, req->spec());
  if (r.ok()) *out = std::move(*r);
  return scope.Done(r.status());
}

grpc::Status CompressionService::ListWorkers(grpc::ServerContext* ctx, const v1::ListWorkersRequest* req,
                                             v1::ListWorkersResponse* out) {
  RpcScope scope(m_, "ListWorkers");
  auto p = Caller(ctx);
  if (!p.ok()) return scope.Done(p.status());
  auto r = c_->ListWorkers(*p);
  if (r.ok()) *out = std::move(*r);
  return scope.Done(r.status());
}

grpc::Status WorkerServiceImpl::Connect(grpc::ServerContext* ctx,
                                        grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) {
  RpcScope scope(m_, "WorkerConnect");
  v1::WorkerMessage first;
  if (!stream->Read(&first)) return scope.Done(absl::CancelledError("the worker closed the stream before Register"));
  if (!first.has_register_())
    return scope.Done(absl::FailedPreconditionError("the first message of a worker stream must be Register"));
  const v1::Register& reg = first.register_();
  std::string token = reg.token();
  if (token.empty()) {
    std::string h = AuthHeader(ctx);
    if (h.size() > 7) token = h.substr(7);
  }
  auto p = auth_->AuthenticateToken(token);
  if (!p.ok()) return scope.Done(p.status());
  if (p->role != Role::kWorker && p->role != Role::kAdmin)
    return scope.Done(absl::PermissionDeniedError(
        "workers authenticate with the worker token (DATA_DIR/worker.token) or an admin token"));
  if (reg.worker_id().empty()) return scope.Done(absl::InvalidArgumentError("register.worker_id: required"));
  auto writer = std::make_shared<StreamWriter>(stream);
  WorkerLink link;
  link.send = [writer](const v1::CoordinatorMessage& m) { return writer->Write(m); };
  link.close = [ctx] { ctx->TryCancel(); };
  const int64_t session = c_->RegisterWorker(reg, link);
  v1::WorkerMessage msg;
  while (stream->Read(&msg)) c_->OnWorkerMessage(reg.worker_id(), session, msg);
  c_->OnWorkerDisconnected(reg.worker_id(), session);
  return scope.Done(ctx->IsCancelled() ? absl::CancelledError("worker stream closed") : absl::OkStatus());
}

}  // namespace llmc::server
