// Files tandem reads (the config, data files): opened only when they are regular files, without
// ever blocking on a FIFO, and otherwise refused with the reason: the path does not exist, is a
// directory, a device or a FIFO, or cannot be read (the errno text, "Permission denied").
#pragma once

#include <sys/stat.h>

#include <string>
#include <string_view>

#include "runtime/core/owned_fd.h"

namespace tandem {

// Opens `path` read-only, following symbolic links. Throws an Error
//   "<what> '<path>': does not exist; <fix>"   (likewise "is a directory, not a regular file")
// unless it is a regular file this process may read; `fix` says what to do instead. `info`, when
// given, receives the file's fstat.
OwnedFd open_input_file(std::string_view what, const std::string& path, std::string_view fix,
                        struct stat* info = nullptr);

// The whole content of a file opened as above.
std::string read_input_file(std::string_view what, const std::string& path, std::string_view fix);

// "a directory", "a FIFO", "a character device"... for a stat mode (output_file.cc uses it too).
std::string_view file_type_name(mode_t mode);

}  // namespace tandem
