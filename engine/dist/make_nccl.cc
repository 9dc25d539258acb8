#include "engine/dist/make_communicator.h"
#include "engine/dist/nccl_communicator.h"

namespace llmc {

absl::StatusOr<std::unique_ptr<Communicator>> MakeNcclCommunicator(const CommOptions& o, RendezvousStore* store) {
  NcclOptions n;
  n.rank = o.rank;
  n.size = o.size;
  n.device = o.device;
  n.prefix = o.prefix;
  n.timeout = o.timeout;
  auto c = NcclCommunicator::Create(n, store);
  if (!c.ok()) return c.status();
  return std::unique_ptr<Communicator>(std::move(*c));
}

}  // namespace llmc
