// A known violation that clang's thread-safety analysis must reject: scripts/thread_safety.sh compiles this
// file with the flags of the real sources and fails unless clang reports "reading variable 'count_' requires
// holding mutex 'mu_'" as an error. It is not part of any build target.
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace llmc::thread_safety_check {

class Counter {
 public:
  void Increment() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    ++count_;
  }
  // The violation: reads a guarded member without holding its mutex.
  int UnlockedRead() const { return count_; }

 private:
  mutable absl::Mutex mu_;
  int count_ ABSL_GUARDED_BY(mu_) = 0;
};

int Use() {
  Counter c;
  c.Increment();
  return c.UnlockedRead();
}

}  // namespace llmc::thread_safety_check
