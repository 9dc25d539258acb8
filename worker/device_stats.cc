#include "worker/device_stats.h"

#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace llmc::worker {

namespace {

class CpuStatsSampler final : public DeviceStatsSampler {
 public:
  explicit CpuStatsSampler(std::string proc_dir) : proc_dir_(std::move(proc_dir)) {}

  DeviceSample Sample() override {
    DeviceSample s;
    uint64_t total_kb = 0, available_kb = 0;
    bool have_total = false, have_available = false;
    std::ifstream mem(proc_dir_ + "/meminfo");
    std::string line;
    while (std::getline(mem, line)) {
      std::istringstream in(line);
      std::string key;
      uint64_t kb = 0;
      if (!(in >> key >> kb)) continue;
      if (key == "MemTotal:") have_total = true, total_kb = kb;
      if (key == "MemAvailable:") have_available = true, available_kb = kb;
    }
    if (!have_total || !have_available || available_kb > total_kb) {
      s.why = absl::StrCat(proc_dir_, "/meminfo has no MemTotal and MemAvailable lines");
      return s;
    }
    s.valid = true;
    s.memory_total_bytes = total_kb * 1024;
    s.memory_used_bytes = (total_kb - available_kb) * 1024;
    // "cpu  user nice system idle iowait irq softirq steal ..." in clock ticks since boot.
    std::ifstream stat(proc_dir_ + "/stat");
    if (std::getline(stat, line) && absl::StartsWith(line, "cpu ")) {
      std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      uint64_t total = 0, idle = 0;
      bool ok = f.size() >= 5;
      for (size_t i = 1; ok && i < f.size() && i <= 8; ++i) {
        uint64_t v = 0;
        ok = absl::SimpleAtoi(f[i], &v);
        total += v;
        if (i == 4 || i == 5) idle += v;  // idle, iowait
      }
      if (ok) {
        if (have_prev_ && total > prev_total_) {
          const double busy = static_cast<double>((total - idle) - (prev_total_ - prev_idle_));
          s.utilization = std::min(1.0, std::max(0.0, busy / static_cast<double>(total - prev_total_)));
        }
        have_prev_ = true;
        prev_total_ = total;
        prev_idle_ = idle;
      }
    }
    return s;
  }

 private:
  const std::string proc_dir_;
  bool have_prev_ = false;
  uint64_t prev_total_ = 0, prev_idle_ = 0;
};

// The few NVML entry points used, with NVML's C ABI (nvml.h): int return codes (0 = NVML_SUCCESS), an opaque
// device handle, and the memory and utilization structs.
using NvmlDevice = void*;
struct NvmlMemory {
  unsigned long long total, free, used;
};
struct NvmlUtilization {
  unsigned int gpu, memory;
};

class NvmlStatsSampler final : public DeviceStatsSampler {
 public:
  explicit NvmlStatsSampler(std::string visible) : visible_(std::move(visible)) {}
  ~NvmlStatsSampler() override {
    if (lib_) {
      if (shutdown_) shutdown_();
      dlclose(lib_);
    }
  }

  DeviceSample Sample() override {
    DeviceSample s;
    if (!device_ && !Open(&s.why)) return s;
    NvmlMemory m{};
    if (int rc = get_memory_(device_, &m); rc != 0) {
      s.why = absl::StrCat("nvmlDeviceGetMemoryInfo failed (NVML error ", rc, ")");
      return s;
    }
    s.valid = true;
    s.memory_total_bytes = m.total;
    s.memory_used_bytes = m.used;
    NvmlUtilization u{};
    if (get_utilization_(device_, &u) == 0) s.utilization = std::min(100u, u.gpu) / 100.0;
    return s;
  }

 private:
  bool Open(std::string* why) {
    if (failed_) {
      *why = open_error_;
      return false;
    }
    failed_ = true;  // until it worked
    lib_ = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib_) {
      open_error_ = "libnvidia-ml.so.1 (NVML, part of the NVIDIA driver) cannot be loaded";
      *why = open_error_;
      return false;
    }
    auto init = reinterpret_cast<int (*)()>(dlsym(lib_, "nvmlInit_v2"));
    shutdown_ = reinterpret_cast<int (*)()>(dlsym(lib_, "nvmlShutdown"));
    auto by_index = reinterpret_cast<int (*)(unsigned, NvmlDevice*)>(dlsym(lib_, "nvmlDeviceGetHandleByIndex_v2"));
    auto by_uuid = reinterpret_cast<int (*)(const char*, NvmlDevice*)>(dlsym(lib_, "nvmlDeviceGetHandleByUUID"));
    get_memory_ = reinterpret_cast<int (*)(NvmlDevice, NvmlMemory*)>(dlsym(lib_, "nvmlDeviceGetMemoryInfo"));
    get_utilization_ =
        reinterpret_cast<int (*)(NvmlDevice, NvmlUtilization*)>(dlsym(lib_, "nvmlDeviceGetUtilizationRates"));
    if (!init || !shutdown_ || !by_index || !by_uuid || !get_memory_ || !get_utilization_) {
      open_error_ = "libnvidia-ml.so.1 lacks the NVML functions llmc uses (an old driver?)";
      *why = open_error_;
      return false;
    }
    if (int rc = init(); rc != 0) {
      shutdown_ = nullptr;
      open_error_ = absl::StrCat("nvmlInit failed (NVML error ", rc, ")");
      *why = open_error_;
      return false;
    }
    const std::string first(absl::StripAsciiWhitespace(visible_.substr(0, visible_.find(','))));
    unsigned index = 0;
    int rc = 0;
    if (first.empty()) {
      rc = by_index(0, &device_);
    } else if (absl::StartsWith(first, "GPU-")) {
      rc = by_uuid(first.c_str(), &device_);
    } else if (absl::SimpleAtoi(first, &index)) {
      rc = by_index(index, &device_);
    } else {
      open_error_ = absl::StrCat("CUDA_VISIBLE_DEVICES entry '", first,
                                 "' is neither an index nor a GPU-... UUID (MIG instances are not sampled)");
      *why = open_error_;
      return false;
    }
    if (rc != 0 || !device_) {
      device_ = nullptr;
      open_error_ = absl::StrCat("NVML has no GPU '", first.empty() ? "0" : first, "' (NVML error ", rc, ")");
      *why = open_error_;
      return false;
    }
    failed_ = false;
    return true;
  }

  const std::string visible_;
  void* lib_ = nullptr;
  NvmlDevice device_ = nullptr;
  bool failed_ = false;
  std::string open_error_;
  int (*shutdown_)() = nullptr;
  int (*get_memory_)(NvmlDevice, NvmlMemory*) = nullptr;
  int (*get_utilization_)(NvmlDevice, NvmlUtilization*) = nullptr;
};

}  // namespace

std::unique_ptr<DeviceStatsSampler> MakeCpuStatsSampler(const std::string& proc_dir) {
  return std::make_unique<CpuStatsSampler>(proc_dir);
}

std::unique_ptr<DeviceStatsSampler> MakeNvmlStatsSampler(const std::string& visible_devices) {
  return std::make_unique<NvmlStatsSampler>(visible_devices);
}

std::unique_ptr<DeviceStatsSampler> MakeDeviceStatsSampler(const std::string& device) {
  if (device == "cuda") {
    const char* v = std::getenv("CUDA_VISIBLE_DEVICES");
    return MakeNvmlStatsSampler(v ? v : "");
  }
  return MakeCpuStatsSampler();
}

}  // namespace llmc::worker
