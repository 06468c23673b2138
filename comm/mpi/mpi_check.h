// TANDEM_CHECK_MPI: every MPI call is checked; a failure names the call, file, line and MPI's text.
#pragma once

#include <mpi.h>

#include "runtime/core/errors.h"

namespace tandem::comm::detail {
std::string mpi_error_text(int code);
}

#define TANDEM_CHECK_MPI(call)                                                                     \
  do {                                                                                             \
    const int tandem_mpi_status_ = (call);                                                         \
    if (tandem_mpi_status_ != MPI_SUCCESS) [[unlikely]]                                            \
      TANDEM_FAIL(#call, " failed: ", ::tandem::comm::detail::mpi_error_text(tandem_mpi_status_)); \
  } while (0)
