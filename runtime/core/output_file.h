// Every file tandem writes for its user goes through here: the run summary, the Chrome trace, the
// flight records, the schedule SVG, and the per-step logs and checkpoints to come. A path is
// checked before any work is done, so that a bad one cannot throw away a finished run, and a file
// is written whole or not at all: a reader never sees half of it, and a failed write leaves the
// old content in place.
#pragma once

#include <string>
#include <string_view>

namespace tandem {

// Throws an Error "<what> '<path>': <what is wrong>; <the fix>" unless `path` can be written by
// write_output_file: it is absent or a regular file (not a directory, device, FIFO, socket or
// symbolic link, which tandem would replace rather than write), and its directory exists and lets
// this process create files there (tried with a file of a name no one else uses, removed at
// once). `what` names the file for the user: "--summary-json", "flight record".
void check_output_path(std::string_view what, const std::string& path);

// Replaces `path` by a file holding exactly `content`, or leaves it as it was: writes a temporary
// file of a fresh name in the same directory, fsyncs it and renames it over `path`. Refuses, as
// check_output_path does, a target that is not a regular file. On any failure the temporary file
// is removed and an Error names `what`, the path and the errno reason. Files are created with
// mode 0666 less the umask, as by any other program.
void write_output_file(std::string_view what, const std::string& path, std::string_view content);

}  // namespace tandem
