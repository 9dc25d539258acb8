// libFuzzer target: safetensors headers and whole safetensors files.
//
// The input is used twice:
//  1. as the header JSON, parsed against data sections of several sizes by ParseSafetensorsHeader;
//  2. as the bytes of a whole file (8-byte length, header, data), opened with SafetensorsFile::Open through a
//     memfd, and every accepted tensor's bytes are read.
// Besides the sanitizers, the target checks the header contract: an accepted header has known dtypes, sizes that
// equal dtype x shape, offsets inside the data section, tensors sorted by offset and not overlapping; a rejected
// one has a message naming the source.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "engine/io/safetensors.h"

namespace {

void Fail(const char* what, const std::string& detail) {
  std::fprintf(stderr, "fuzz_safetensors_header: %s: %s\n", what, detail.c_str());
  std::abort();
}

void CheckHeader(const llmc::SafetensorsHeader& h, uint64_t data_size) {
  uint64_t prev_end = 0;
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    const llmc::TensorInfo& t = h.tensors[i];
    if (t.begin > t.end || t.end > data_size) Fail("offsets outside the data section", t.name);
    auto parsed = llmc::ParseDType(llmc::DTypeName(t.dtype));
    if (!parsed || *parsed != t.dtype) Fail("dtype does not round-trip", t.name);
    uint64_t n = llmc::DTypeSize(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0) Fail("negative dimension accepted", t.name);
      if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) Fail("overflowing shape accepted", t.name);
    }
    if (n != t.nbytes()) Fail("size differs from dtype x shape", t.name);
    if (i > 0 && t.begin < prev_end) Fail("overlapping or unsorted tensors accepted", t.name);
    prev_end = t.end;
  }
}

void FuzzHeaderJson(const uint8_t* data, size_t size) {
  const absl::string_view json(reinterpret_cast<const char*>(data), size);
  for (uint64_t data_size : {uint64_t{0}, uint64_t{size}, uint64_t{1} << 20, ~uint64_t{0}}) {
    auto h = llmc::ParseSafetensorsHeader(json, data_size, "fuzz/header.safetensors");
    if (!h.ok()) {
      if (h.status().message().find("fuzz/header.safetensors") == absl::string_view::npos)
        Fail("error does not name the source", std::string(h.status().message()));
      continue;
    }
    CheckHeader(*h, data_size);
  }
}

void FuzzWholeFile(const uint8_t* data, size_t size) {
  static int fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
  if (fd < 0) return;
  if (ftruncate(fd, 0) != 0) return;
  size_t done = 0;
  while (done < size) {
    ssize_t r = pwrite(fd, data + done, size - done, static_cast<off_t>(done));
    if (r <= 0) return;
    done += static_cast<size_t>(r);
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  auto f = llmc::SafetensorsFile::Open(path);
  if (!f.ok()) {
    if (f.status().message().find(path) == absl::string_view::npos)
      Fail("error does not name the file", std::string(f.status().message()));
    return;
  }
  if ((*f)->file_size() != size) Fail("file size", std::to_string((*f)->file_size()));
  uint32_t sum = 0;
  for (const auto& t : (*f)->tensors()) {
    if ((*f)->Find(t.name) == nullptr) Fail("accepted tensor cannot be found", t.name);
    for (uint8_t b : (*f)->Data(t)) sum += b;  // reads every byte: must stay inside the mapping
    (*f)->Release(t);
  }
  volatile uint32_t sink = sum;
  (void)sink;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzHeaderJson(data, size);
  FuzzWholeFile(data, size);
  return 0;
}
