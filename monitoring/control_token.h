// The secret that commands to the control service must present (`authorization: Bearer TOKEN`):
// where a job takes it from, where it writes one it made up, and how tandemctl finds it.
#pragma once

#include <string>
#include <string_view>

namespace tandem::monitoring {

// Where tandemctl looks by default, and where a job writes a token it generated:
// ~/.tandem/control-token-PORT ($HOME, else the user's home directory from the password file).
std::string default_token_path(int port);

// The token in `path`, surrounding whitespace stripped. Throws an Error naming the file when
// it cannot be read, is empty, or holds characters a gRPC header cannot carry (anything but
// printable ASCII without spaces).
std::string read_token_file(const std::string& path);

// TANDEM_CONTROL_TOKEN, stripped and checked as a token file is ("" when unset or empty), so that
// the job and tandemctl read the same value from it.
std::string token_from_environment();

// The job's token and a sentence saying where it came from, for the log (never the token).
struct ControlToken {
  std::string value;
  std::string source;
  std::string generated_path;  // where to write it (write_generated_token) when it was made here
};

// From `token_file` when set, else from TANDEM_CONTROL_TOKEN, else 32 random bytes in hex that
// write_generated_token then puts in default_token_path(port).
ControlToken resolve_control_token(const std::string& token_file, int port);

// Writes a generated token to its file, readable by its owner only (mode 0600, in a directory of
// mode 0700), replacing an older one whole. Throws an Error naming the file when it cannot.
void write_generated_token(const ControlToken& token);

// Equal strings, compared in time that depends on their lengths only.
bool tokens_equal(std::string_view a, std::string_view b);

}  // namespace tandem::monitoring
