// A floor under the stack size any library asks pthread_attr_setstacksize for. Debian's civetweb
// (the HTTP server of monitoring/http_server.h) starts its threads with 100 KiB stacks, and
// glibc carves every thread's static TLS out of its stack: tandem's libraries take about 80 KiB
// of it (OpenBLAS alone 61 KiB, NCCL 12 KiB, cudart 4 KiB), so a scrape overran the rest and
// crashed the process. tandem defines pthread_attr_setstacksize itself (the executable exports
// it, see monitoring/CMakeLists.txt, so shared libraries bind to it), raising a request below the
// floor to the floor and passing the rest to glibc's.
#pragma once

#include <cstddef>

namespace tandem::monitoring {

inline constexpr size_t kThreadStackFloorBytes = size_t{1} << 20;

// The stack size a request of `requested` bytes gets; calling it also links the floor in.
size_t thread_stack_bytes(size_t requested);

}  // namespace tandem::monitoring
