// The pthread_attr_setstacksize that raises small stack requests to kThreadStackFloorBytes.
#include "monitoring/thread_stack_floor.h"

#include <dlfcn.h>
#include <pthread.h>

#include <algorithm>
#include <cerrno>

namespace tandem::monitoring {

size_t thread_stack_bytes(size_t requested) {
  return std::max(requested, kThreadStackFloorBytes);
}

}  // namespace tandem::monitoring

extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t stack_bytes) {
  using Setter = int (*)(pthread_attr_t*, size_t);
  static const Setter glibc =
      reinterpret_cast<Setter>(::dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  if (glibc == nullptr) return ENOSYS;
  return glibc(attr, tandem::monitoring::thread_stack_bytes(stack_bytes));
}
