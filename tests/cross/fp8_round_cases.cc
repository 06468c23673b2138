// The FP8 codec on its own, for a build without x86 (aarch64, under qemu-user in CI): every
// rounding case of tests/data/fp8 (computed independently of the project) encoded by the scalar
// fp8_encode and the bulk fp8_encode_n, which there take the portable path. Prints one line per
// file and exits non-zero on the first mismatch.
// Usage: fp8_round_cases DATA_DIR
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "kernels/fp8.h"

using namespace tandem::kernels;

namespace {

int check(const std::string& path, tandem::Fp8Format format) {
  std::ifstream in(path);
  if (!in) {
    std::printf("FAIL: cannot read %s\n", path.c_str());
    return 1;
  }
  std::string line;
  int cases = 0;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string bits_text, hex, saturating, plain;
    fields >> bits_text >> hex >> saturating >> plain;
    const auto bits = static_cast<uint32_t>(std::stoul(bits_text, nullptr, 16));
    float value;
    std::memcpy(&value, &bits, 4);
    uint8_t bulk = 0;
    fp8_encode_n(&value, 1.0f, &bulk, 1, format, true);
    const uint8_t one = fp8_encode(value, format, true);
    // "nan": any NaN code of the format (E4M3 S.1111.111; E5M2 S.11111.xx with xx non-zero).
    auto is_nan = [&](uint8_t c) {
      return format == tandem::Fp8Format::kE4M3 ? (c & 0x7f) == 0x7f : (c & 0x7f) > 0x7c;
    };
    const bool any_nan = saturating == "nan";
    const auto want = any_nan ? 0 : static_cast<uint8_t>(std::stoul(saturating, nullptr, 16));
    if (any_nan ? !(is_nan(one) && is_nan(bulk)) : (one != want || bulk != want)) {
      std::printf("FAIL: %s: %s encodes to 0x%02x (bulk 0x%02x), expected 0x%02x\n", path.c_str(),
                  bits_text.c_str(), one, bulk, want);
      return 1;
    }
    ++cases;
  }
  std::printf("ok: %s: %d cases, avx2 %s\n", path.c_str(), cases, fp8_uses_avx2() ? "yes" : "no");
  return cases > 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::printf("usage: fp8_round_cases DATA_DIR\n");
    return 2;
  }
  const std::string dir = argv[1];
  return check(dir + "/round_e4m3.tsv", tandem::Fp8Format::kE4M3) |
         check(dir + "/round_e5m2.tsv", tandem::Fp8Format::kE5M2);
}
