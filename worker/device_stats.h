// Samples what a worker's device is doing, for its heartbeats (proto DeviceStats; the coordinator exports them as
// llmc_worker_device_* metrics, docs/service.md).
//
//   cpu:  the host: memory in use = MemTotal - MemAvailable of /proc/meminfo; utilization = the busy share of all
//         CPUs between two samples (/proc/stat: everything but idle and iowait), so the first sample has none.
//   cuda: the worker's GPU through NVML (libnvidia-ml.so.1, opened at run time: no build dependency): memory used
//         and total, and the share of the last sample period in which a kernel ran (nvmlDeviceGetUtilizationRates).
//         The GPU is the first entry of CUDA_VISIBLE_DEVICES (an index, or a GPU-... UUID; a MIG instance is not
//         sampled), else index 0. NVML counts devices in PCI order: set CUDA_DEVICE_ORDER=PCI_BUS_ID when giving
//         indices (`llmc serve --device cuda` does), or give UUIDs. Device-wide: other processes count too.
//
// A device that cannot be sampled gives valid = false and says why once in `why` (the worker logs it and keeps
// sending heartbeats without device figures).
//
// Thread-safety: one sampler is used by one thread (the worker's heartbeat thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace llmc::worker {

struct DeviceSample {
  bool valid = false;
  uint64_t memory_used_bytes = 0;
  uint64_t memory_total_bytes = 0;
  double utilization = -1;  // 0..1; negative: not known (yet)
  std::string why;          // when !valid: what failed
};

class DeviceStatsSampler {
 public:
  virtual ~DeviceStatsSampler() = default;
  virtual DeviceSample Sample() = 0;
};

// The host's CPUs and memory, read from `proc_dir` (/proc; tests give a directory of fake files).
std::unique_ptr<DeviceStatsSampler> MakeCpuStatsSampler(const std::string& proc_dir = "/proc");
// The GPU named by `visible_devices` (CUDA_VISIBLE_DEVICES's value; "" for index 0) through NVML.
std::unique_ptr<DeviceStatsSampler> MakeNvmlStatsSampler(const std::string& visible_devices);
// The sampler for a worker's --device (cpu or cuda), reading the environment.
std::unique_ptr<DeviceStatsSampler> MakeDeviceStatsSampler(const std::string& device);

}  // namespace llmc::worker
