// llmc-bench-allreduce --gpus N [--mib 256] [--iters 20]: the fp32 all-reduce bandwidth of this machine's GPUs
// through llmc's NcclCommunicator (one rank per GPU, as threads), the reference the distributed calibration's
// communication is compared with (bench/gpu/multi_gpu.sh). Prints time per all-reduce, algorithm bandwidth
// (bytes / time) and bus bandwidth (2 (n-1)/n x algorithm bandwidth, as nccl-tests reports it).
#include <cuda_runtime.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include "engine/dist/nccl_communicator.h"

int main(int argc, char** argv) {
  CLI::App app{"fp32 all-reduce bandwidth over NCCL, one rank per GPU"};
  int gpus = 2, iters = 20;
  int64_t mib = 256;
  app.add_option("--gpus", gpus, "ranks (one per GPU)")->capture_default_str();
  app.add_option("--mib", mib, "buffer size in MiB")->capture_default_str();
  app.add_option("--iters", iters, "timed all-reduces (after 3 warm-up ones)")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  int have = 0;
  if (cudaGetDeviceCount(&have) != cudaSuccess || have < gpus || gpus < 1 || mib < 1 || iters < 1) {
    std::fprintf(stderr, "llmc-bench-allreduce: error: need --gpus between 1 and the %d GPUs here, positive sizes\n", have);
    return 1;
  }
  const size_t n = static_cast<size_t>(mib) << 18;  // floats
  auto store = llmc::NewMemoryStore();
  std::vector<double> seconds(gpus, 0);
  std::vector<int> failed(gpus, 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < gpus; ++r)
    threads.emplace_back([&, r] {
      cudaSetDevice(r);
      llmc::NcclOptions o;
      o.rank = r;
      o.size = gpus;
      o.device = r;
      o.prefix = "bench";
      auto c = llmc::NcclCommunicator::Create(o, store.get());
      float* d = nullptr;
      if (!c.ok() || cudaMalloc(&d, n * sizeof(float)) != cudaSuccess) {
        failed[r] = 1;
        return;
      }
      cudaMemset(d, 0, n * sizeof(float));
      for (int i = 0; i < 3; ++i) failed[r] |= !(*c)->AllReduceSum(absl::MakeSpan(d, n)).ok();
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < iters; ++i) failed[r] |= !(*c)->AllReduceSum(absl::MakeSpan(d, n)).ok();
      seconds[r] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / iters;
      cudaFree(d);
    });
  for (auto& t : threads) t.join();
  for (int f : failed)
    if (f) {
      std::fprintf(stderr, "llmc-bench-allreduce: error: an all-reduce failed\n");
      return 1;
    }
  const double t = seconds[0], bytes = static_cast<double>(n) * sizeof(float);
  std::printf("all-reduce %d GPUs, %lld MiB fp32: %.3f ms, algbw %.1f GB/s, busbw %.1f GB/s\n", gpus,
              static_cast<long long>(mib), t * 1e3, bytes / t / 1e9, bytes / t / 1e9 * 2.0 * (gpus - 1) / gpus);
  return 0;
}
