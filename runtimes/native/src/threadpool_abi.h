// The two entry points of ExecuTorch's thread pool that the runner calls to size it. The executorch
// wheel ships libexecutorch_threadpool.so and threadpool_guard.h but not threadpool.h, so they are
// declared here as the library exports them (see `nm -DC libexecutorch_threadpool.so`).
#pragma once

#include <cstddef>
#include <cstdint>

namespace executorch::extension::threadpool {

class ThreadPool {
 public:
  bool _unsafe_reset_threadpool(uint32_t num_threads);
  size_t get_thread_count() const;
};

ThreadPool* get_threadpool();

}  // namespace executorch::extension::threadpool
