// The gRPC front ends of the coordinator: the public Compression service and the internal WorkerService.
// Each call authenticates the bearer token (metadata `authorization: Bearer <token>`), calls the Coordinator
// and maps absl::Status to grpc::Status (same canonical code and message). Every call is counted in
// llmc_rpc_requests_total{method,code} and timed in llmc_rpc_duration_seconds{method}.
#pragma once

#include <grpcpp/grpcpp.h>
#include <grpcpp/support/server_interceptor.h>

#include "llmc/v1/compression.grpc.pb.h"
#include "llmc/v1/worker.grpc.pb.h"
#include "server/auth.h"
#include "server/coordinator.h"
#include "server/metrics.h"

namespace llmc::server {

grpc::Status ToGrpc(const absl::Status& s);

// gRPC answers a request it cannot parse (e.g. a string field that is not valid UTF-8, which protobuf refuses)
// with INTERNAL and an empty message. This factory's interceptor turns that answer into INVALID_ARGUMENT saying
// what to fix; every other status passes unchanged (the handlers never return INTERNAL without a message).
class MalformedRequestInterceptorFactory final : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override;
};
// The canonical name of a code ("OK", "NOT_FOUND", ...), as in metrics labels.
const char* CodeName(absl::StatusCode code);

class CompressionService final : public v1::Compression::Service {
 public:
  CompressionService(Coordinator* c, Authenticator* auth, ServiceMetrics* m) : c_(c), auth_(auth), m_(m) {}
  grpc::Status CreateJob(grpc::ServerContext* ctx, const v1::CreateJobRequest* req, v1::Job* out) override;
  grpc::Status GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* out) override;
  grpc::Status ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req, v1::ListJobsResponse* out) override;
  grpc::Status CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* out) override;
  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::JobEvent>* writer) override;
  grpc::Status ValidateJob(grpc::ServerContext* ctx, const v1::ValidateJobRequest* req,
                           v1::ValidateJobResponse* out) override;
  grpc::Status ListWorkers(grpc::ServerContext* ctx, const v1::ListWorkersRequest* req,
                           v1::ListWorkersResponse* out) override;

 private:
  absl::StatusOr<Principal> Caller(grpc::ServerContext* ctx);
  Coordinator* c_;
  Authenticator* auth_;
  ServiceMetrics* m_;
};

class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  WorkerServiceImpl(Coordinator* c, Authenticator* auth, ServiceMetrics* m) : c_(c), auth_(auth), m_(m) {}
  grpc::Status Connect(grpc::ServerContext* ctx,
                       grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) override;

 private:
  Coordinator* c_;
  Authenticator* auth_;
  ServiceMetrics* m_;
};

}  // namespace llmc::server
