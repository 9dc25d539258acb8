#include "engine/dist/make_communicator.h"

#include "absl/strings/str_cat.h"
#include "engine/dist/gloo_communicator.h"

namespace llmc {

std::string DefaultCommBackend(const std::string& device) { return device == "cuda" ? "nccl" : "gloo"; }

absl::StatusOr<std::unique_ptr<Communicator>> MakeCommunicator(const CommOptions& o, RendezvousStore* store) {
  if (o.backend == "gloo") {
    GlooOptions g;
    g.rank = o.rank;
    g.size = o.size;
    g.hostname = o.hostname;
    g.prefix = o.prefix;
    g.timeout = o.timeout;
    auto c = GlooCommunicator::Create(g, store);
    if (!c.ok()) return c.status();
    return std::unique_ptr<Communicator>(std::move(*c));
  }
  if (o.backend == "nccl") return MakeNcclCommunicator(o, store);
  return absl::InvalidArgumentError(absl::StrCat("unknown communication backend '", o.backend.substr(0, 64),
                                                 "'; use gloo or nccl"));
}

}  // namespace llmc
