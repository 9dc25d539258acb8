#include "engine/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/io_error.h"
#include "common/util.h"

namespace llmc {

namespace {
constexpr uint64_t kMaxHeaderSize = 100u << 20;  // as the reference implementation

bool MulOverflow(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }
}  // namespace

uint64_t TensorInfo::numel() const {
  uint64_t n = 1;
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

uint64_t TensorSpec::nbytes() const {
  uint64_t n = DTypeSize(dtype);
  for (int64_t d : shape) n *= static_cast<uint64_t>(d);
  return n;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view json, uint64_t data_size,
                                                         absl::string_view source) {
  auto bad = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(source, ": invalid safetensors header: ", what,
                                            "; the file is corrupt or not a safetensors file"));
  };
  nlohmann::json j = nlohmann::json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad("header is not valid JSON");
  if (!j.is_object()) return bad("header is not a JSON object");
  SafetensorsHeader h;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return bad("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return bad(absl::StrCat("__metadata__ value '", m.key(), "' is not a string"));
        h.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) return bad(absl::StrCat("entry '", name, "' is not an object"));
    auto dt = v.find("dtype");
    auto shape = v.find("shape");
    auto offs = v.find("data_offsets");
    if (dt == v.end() || !dt->is_string()) return bad(absl::StrCat("tensor '", name, "' has no dtype string"));
    if (shape == v.end() || !shape->is_array()) return bad(absl::StrCat("tensor '", name, "' has no shape array"));
    if (offs == v.end() || !offs->is_array() || offs->size() != 2)
      return bad(absl::StrCat("tensor '", name, "' has no [begin, end] data_offsets"));
    TensorInfo t;
    t.name = name;
    auto parsed = ParseDType(dt->get<std::string>());
    if (!parsed) return bad(absl::StrCat("tensor '", name, "' has unknown dtype '", dt->get<std::string>(), "'"));
    t.dtype = *parsed;
    uint64_t numel = 1;
    for (const auto& d : *shape) {
      if (!d.is_number_integer() || d.get<int64_t>() < 0)
        return bad(absl::StrCat("tensor '", name, "' has a shape entry that is not a non-negative integer"));
      uint64_t dim = d.get<uint64_t>();
      if (MulOverflow(numel, dim, &numel)) return bad(absl::StrCat("tensor '", name, "' shape overflows"));
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const auto& o : *offs) {
      if (!o.is_number_unsigned() && !(o.is_number_integer() && o.get<int64_t>() >= 0))
        return bad(absl::StrCat("tensor '", name, "' has a data offset that is not a non-negative integer"));
    }
    t.begin = (*offs)[0].get<uint64_t>();
    t.end = (*offs)[1].get<uint64_t>();
    uint64_t expected;
    if (MulOverflow(numel, DTypeSize(t.dtype), &expected)) return bad(absl::StrCat("tensor '", name, "' is too large"));
    if (t.begin > t.end || t.end > data_size)
      return bad(absl::StrCat("tensor '", name, "' data_offsets [", t.begin, ", ", t.end,
                              "] lie outside the data section of ", data_size, " bytes (truncated file?)"));
    if (t.end - t.begin != expected)
      return bad(absl::StrCat("tensor '", name, "' occupies ", t.end - t.begin, " bytes but dtype ",
                              DTypeName(t.dtype), " x shape needs ", expected));
    h.tensors.push_back(std::move(t));
  }
  std::sort(h.tensors.begin(), h.tensors.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (size_t i = 1; i < h.tensors.size(); ++i) {
    const auto& prev = h.tensors[i - 1];
    const auto& cur = h.tensors[i];
    if (cur.begin < prev.end)
      return bad(absl::StrCat("tensors '", prev.name, "' and '", cur.name, "' overlap"));
  }
  return h;
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path) {
  std::unique_ptr<SafetensorsFile> f(new SafetensorsFile());
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) return ErrnoToStatus(errno, absl::StrCat("cannot open ", path));
  struct stat st;
  if (fstat(f->fd_, &st) != 0) return ErrnoToStatus(errno, absl::StrCat("cannot stat ", path));
  if (!S_ISREG(st.st_mode)) return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  f->file_size_ = static_cast<uint64_t>(st.st_size);
  if (f->file_size_ < 8) {
    return absl::DataLossError(
        absl::StrCat(path, ": file is ", f->file_size_, " bytes, too short for a safetensors header (truncated?)"));
  }
  uint8_t len_bytes[8];
  if (pread(f->fd_, len_bytes, 8, 0) != 8) return ErrnoToStatus(errno, absl::StrCat("cannot read ", path));
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  if (n > kMaxHeaderSize || n > f->file_size_ - 8) {
    return absl::DataLossError(absl::StrCat(path, ": header length ", n, " exceeds the file size ", f->file_size_,
                                            " (truncated or not a safetensors file)"));
  }
  std::string header(n, '\0');
  uint64_t got = 0;
  while (got < n) {
    ssize_t r = pread(f->fd_, header.data() + got, n - got, 8 + got);
    if (r <= 0) return ErrnoToStatus(r < 0 ? errno : EIO, absl::StrCat("cannot read header of ", path));
    got += static_cast<uint64_t>(r);
  }
  f->data_start_ = 8 + n;
  LLMC_ASSIGN_OR_RETURN(f->header_, ParseSafetensorsHeader(header, f->file_size_ - f->data_start_, path));
  for (size_t i = 0; i < f->header_.tensors.size(); ++i) f->by_name_[f->header_.tensors[i].name] = i;
  void* m = mmap(nullptr, f->file_size_, PROT_READ, MAP_SHARED, f->fd_, 0);
  if (m == MAP_FAILED) return ErrnoToStatus(errno, absl::StrCat("cannot mmap ", path));
  f->map_ = static_cast<const uint8_t*>(m);
  madvise(m, f->file_size_, MADV_SEQUENTIAL);
  return f;
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(const_cast<uint8_t*>(map_), file_size_);
  if (fd_ >= 0) ::close(fd_);
}

const TensorInfo* SafetensorsFile::Find(absl::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? nullptr : &header_.tensors[it->second];
}

absl::Span<const uint8_t> SafetensorsFile::Data(const TensorInfo& t) const {
  return absl::Span<const uint8_t>(map_ + data_start_ + t.begin, t.nbytes());
}

void SafetensorsFile::Release(const TensorInfo& t, uint64_t offset, uint64_t len) const {
  static const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  uint64_t begin = data_start_ + t.begin + std::min(offset, t.nbytes());
  uint64_t end = data_start_ + t.begin + std::min(t.nbytes(), len == UINT64_MAX ? t.nbytes() : offset + len);
  uint64_t a = begin / page * page;  // pages shared with neighbours may be dropped too: they fault back in
  uint64_t b = (end + page - 1) / page * page;
  b = std::min(b, (file_size_ + page - 1) / page * page);
  if (b > a) madvise(const_cast<uint8_t*>(map_) + a, b - a, MADV_DONTNEED);
}

std::string BuildSafetensorsHeader(const std::vector<TensorSpec>& specs,
                                   const std::map<std::string, std::string>& metadata,
                                   std::vector<uint64_t>* offsets, uint64_t* total_size) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    j["__metadata__"] = m;
  }
  uint64_t off = 0;
  std::vector<uint64_t> rel;
  for (const auto& s : specs) {
    uint64_t n = s.nbytes();
    j[s.name] = {{"dtype", std::string(DTypeName(s.dtype))}, {"shape", s.shape}, {"data_offsets", {off, off + n}}};
    rel.push_back(off);
    off += n;
  }
  std::string text = j.dump();
  while (text.size() % 8 != 0) text.push_back(' ');
  std::string out(8, '\0');
  uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += text;
  if (offsets) {
    offsets->clear();
    for (uint64_t r : rel) offsets->push_back(out.size() + r);
  }
  if (total_size) *total_size = out.size() + off;
  return out;
}

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Open(
    const std::string& path, std::vector<TensorSpec> specs, const std::map<std::string, std::string>& metadata,
    bool reopen) {
  std::unique_ptr<SafetensorsWriter> w(new SafetensorsWriter());
  w->path_ = path;
  w->specs_ = std::move(specs);
  for (size_t i = 0; i < w->specs_.size(); ++i) {
    if (!w->by_name_.emplace(w->specs_[i].name, static_cast<int>(i)).second)
      return absl::InvalidArgumentError(absl::StrCat(path, ": tensor '", w->specs_[i].name, "' listed twice"));
  }
  std::string header = BuildSafetensorsHeader(w->specs_, metadata, &w->offsets_, &w->total_size_);
  {
    absl::MutexLock lock(&w->mu_);
    w->written_.assign(w->specs_.size(), 0);
  }
  if (reopen) {
    w->fd_ = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (w->fd_ < 0) return ErrnoToStatus(errno, absl::StrCat("cannot reopen ", path, " to resume"));
    std::string have(header.size(), '\0');
    ssize_t r = pread(w->fd_, have.data(), have.size(), 0);
    if (r != static_cast<ssize_t>(have.size()) || have != header)
      return absl::FailedPreconditionError(absl::StrCat(path, ": the staged shard does not match this job's plan; ",
                                                        "cannot resume (start the job over)"));
  } else {
    w->fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd_ < 0) return FileWriteError(errno, absl::StrCat("cannot create ", path), path);
  }
  // Space for the whole file up front: a full disk fails before any tensor is computed.
  if (w->total_size_ > 0) {
    int rc = posix_fallocate(w->fd_, 0, static_cast<off_t>(w->total_size_));
    if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL)
      return FileWriteError(rc, absl::StrCat("cannot reserve ", FormatBytes(w->total_size_), " for ", path), path);
  }
  if (reopen) return w;
  uint64_t done = 0;
  while (done < header.size()) {
    ssize_t r = pwrite(w->fd_, header.data() + done, header.size() - done, static_cast<off_t>(done));
    if (r < 0) return FileWriteError(errno, absl::StrCat("cannot write ", path), path);
    done += static_cast<uint64_t>(r);
  }
  return w;
}

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Create(
    const std::string& path, std::vector<TensorSpec> specs, const std::map<std::string, std::string>& metadata) {
  return Open(path, std::move(specs), metadata, /*reopen=*/false);
}

absl::StatusOr<std::unique_ptr<SafetensorsWriter>> SafetensorsWriter::Reopen(
    const std::string& path, std::vector<TensorSpec> specs, const std::map<std::string, std::string>& metadata) {
  return Open(path, std::move(specs), metadata, /*reopen=*/true);
}

void SafetensorsWriter::MarkWritten(int index) {
  absl::MutexLock lock(&mu_);
  if (index >= 0 && index < static_cast<int>(specs_.size())) written_[index] = specs_[index].nbytes();
}

absl::StatusOr<std::vector<uint8_t>> SafetensorsWriter::Read(int index) const {
  if (index < 0 || index >= static_cast<int>(specs_.size()))
    return absl::InternalError(absl::StrCat(path_, ": read of unknown tensor index ", index));
  std::vector<uint8_t> out(specs_[index].nbytes());
  uint64_t done = 0;
  while (done < out.size()) {
    ssize_t r = pread(fd_, out.data() + done, out.size() - done, static_cast<off_t>(offsets_[index] + done));
    if (r <= 0) return ErrnoToStatus(r < 0 ? errno : EIO, absl::StrCat("cannot read back ", specs_[index].name, " from ", path_));
    done += static_cast<uint64_t>(r);
  }
  return out;
}

absl::Status SafetensorsWriter::Sync() {
  absl::MutexLock lock(&close_mu_);
  if (fd_ >= 0 && fdatasync(fd_) != 0) return FileWriteError(errno, absl::StrCat("cannot flush ", path_), path_);
  return absl::OkStatus();
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
}

int SafetensorsWriter::IndexOf(absl::string_view name) const {
  auto it = by_name_.find(std::string(name));
  return it == by_name_.end() ? -1 : it->second;
}

absl::Status SafetensorsWriter::Write(int index, uint64_t offset, absl::Span<const uint8_t> data) {
  if (index < 0 || index >= static_cast<int>(specs_.size()))
    return absl::InternalError(absl::StrCat(path_, ": write to unknown tensor index ", index));
  uint64_t n = specs_[index].nbytes();
  if (offset > n || data.size() > n - offset)
    return absl::InternalError(absl::StrCat(path_, ": write of ", data.size(), " bytes at ", offset,
                                            " exceeds tensor '", specs_[index].name, "' of ", n, " bytes"));
  uint64_t pos = offsets_[index] + offset;
  uint64_t done = 0;
  while (done < data.size()) {
    ssize_t r = pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(pos + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return FileWriteError(errno, absl::StrCat("cannot write ", path_), path_);
    }
    if (r == 0) return FileWriteError(ENOSPC, absl::StrCat("cannot write ", path_), path_);
    done += static_cast<uint64_t>(r);
  }
  // Start writing these pages back now, so the data reaches the disk while the job computes and the final
  // fdatasync has little left to do.
  if (data.size() >= (1u << 20)) sync_file_range(fd_, static_cast<off_t>(pos), static_cast<off_t>(data.size()), SYNC_FILE_RANGE_WRITE);
  absl::MutexLock lock(&mu_);
  written_[index] += data.size();
  return absl::OkStatus();
}

absl::Status SafetensorsWriter::Close() {
  absl::MutexLock close_lock(&close_mu_);
  if (fd_ < 0) return absl::OkStatus();  // closed already
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < specs_.size(); ++i) {
      if (written_[i] != specs_[i].nbytes())
        return absl::InternalError(absl::StrCat(path_, ": tensor '", specs_[i].name, "' got ", written_[i], " of ",
                                                specs_[i].nbytes(), " bytes"));
    }
  }
  if (fdatasync(fd_) != 0) return FileWriteError(errno, absl::StrCat("cannot flush ", path_), path_);
  int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) return FileWriteError(errno, absl::StrCat("cannot close ", path_), path_);
  return absl::OkStatus();
}

}  // namespace llmc
