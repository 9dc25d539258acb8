#include "storage/storage_stats.h"

namespace llmc::storage {

StorageStats& ProcessStorageStats() {
  static StorageStats* stats = new StorageStats();  // never destroyed: threads may still count at exit
  return *stats;
}

}  // namespace llmc::storage
