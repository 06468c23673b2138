// FP8: codecs against the independent OCP reference vectors (tests/data/fp8, exact rational
// arithmetic, computed outside the project), block quantisation error bounds, the GEMM against
// fp64 references, why promotion matters, and the dispatch payload format.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/fp8.h"
#include "kernels/fp8_gemm_plan.h"
#include "tests/unit/grad_check.h"

namespace tandem::kernels {
namespace {

std::vector<std::vector<std::string>> read_tsv(const std::string& name) {
  std::ifstream in(std::string(TANDEM_SOURCE_DIR) + "/tests/data/fp8/" + name);
  EXPECT_TRUE(in.good()) << name;
  std::vector<std::vector<std::string>> rows;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> fields;
    std::stringstream ss(line);
    for (std::string f; std::getline(ss, f, '\t');) fields.push_back(f);
    rows.push_back(fields);
  }
  return rows;
}

uint32_t parse_hex(const std::string& s) {
  return static_cast<uint32_t>(std::stoul(s, nullptr, 16));
}

bool is_nan_code(uint8_t code, Fp8Format f) {
  return std::isnan(fp8_decode(code, f));
}

class Fp8Codec : public ::testing::TestWithParam<Fp8Format> {
 protected:
  std::string suffix() const { return GetParam() == Fp8Format::kE4M3 ? "e4m3" : "e5m2"; }
};

TEST_P(Fp8Codec, All256CodesDecodeToTheSpecifiedValueAndRoundTrip) {
  const auto rows = read_tsv("codes_" + suffix() + ".tsv");
  ASSERT_EQ(rows.size(), 256u);
  for (const auto& row : rows) {
    const auto code = static_cast<uint8_t>(parse_hex(row[0]));
    const float value = fp8_decode(code, GetParam());
    if (row[2] == "nan") {
      EXPECT_TRUE(std::isnan(value)) << row[0];
      EXPECT_TRUE(is_nan_code(fp8_encode(value, GetParam()), GetParam()));
      continue;
    }
    const double expected = std::strtod(row[1].c_str(), nullptr);
    EXPECT_EQ(static_cast<double>(value), expected) << row[0];
    EXPECT_EQ(std::signbit(value), std::signbit(expected)) << row[0];
    if (row[2] == "inf") {
      EXPECT_EQ(fp8_encode(value, GetParam(), false), code) << row[0];
    } else {
      EXPECT_EQ(fp8_encode(value, GetParam()), code) << row[0];  // every finite code round-trips
    }
  }
}

TEST_P(Fp8Codec, RoundsToNearestEvenLikeTheReference) {
  const auto rows = read_tsv("round_" + suffix() + ".tsv");
  ASSERT_GT(rows.size(), 4000u);
  std::vector<float> inputs;
  std::vector<uint8_t> bulk(rows.size()), portable(rows.size());
  for (const auto& row : rows) {
    const uint32_t bits = parse_hex(row[0]);
    float x;
    std::memcpy(&x, &bits, 4);
    inputs.push_back(x);
    for (int column : {2, 3}) {  // saturating, then not
      const uint8_t code = fp8_encode(x, GetParam(), column == 2);
      if (row[column] == "nan") {
        EXPECT_TRUE(is_nan_code(code, GetParam())) << row[1];
      } else {
        EXPECT_EQ(code, parse_hex(row[column])) << row[1] << (column == 2 ? " saturating" : "");
      }
    }
  }
  // The vectorised bulk path (AVX2 here when available) and the portable one agree bit for bit.
  const int64_t sat = fp8_encode_n(inputs.data(), 1.0f, bulk.data(), inputs.size(), GetParam());
  const int64_t sat2 =
      fp8_encode_n_portable(inputs.data(), 1.0f, portable.data(), inputs.size(), GetParam());
  EXPECT_EQ(bulk, portable);
  EXPECT_EQ(sat, sat2);
  EXPECT_GT(sat, 0);  // the reference includes overflowing inputs
  for (size_t i = 0; i < inputs.size(); ++i)
    ASSERT_EQ(bulk[i], fp8_encode(inputs[i], GetParam())) << inputs[i];
}

INSTANTIATE_TEST_SUITE_P(Formats, Fp8Codec, ::testing::Values(Fp8Format::kE4M3, Fp8Format::kE5M2),
                         [](const auto& info) {
                           return info.param == Fp8Format::kE4M3 ? "E4M3" : "E5M2";
                         });

Tensor random_matrix(int64_t rows, int64_t cols, uint64_t seed, double std = 1.0) {
  return testing::random_tensor({rows, cols}, seed, std, DType::kF32);
}

TEST(Fp8Quantize, ErrorWithinHalfAnUlpOfTheFormatAtEachBlocksScale) {
  for (auto granularity : {ScaleGranularity::kTile1x128, ScaleGranularity::kBlock128x128})
    for (Fp8Format format : {Fp8Format::kE4M3, Fp8Format::kE5M2})
      for (bool pow2 : {false, true}) {
        // 131 x 300: partial tiles and blocks at both edges; rows of very different magnitude.
        Tensor x = random_matrix(131, 300, 11);
        for (int64_t r = 0; r < 131; ++r)
          for (int64_t c = 0; c < 300; ++c)
            x.data<float>()[r * 300 + c] *= std::ldexp(1.0f, r % 9 - 4);
        const auto q = quantize(x, granularity, {format, pow2, true});
        const Tensor back = dequantize(q);
        const auto& info = fp8_info(format);
        for (int64_t r = 0; r < 131; ++r)
          for (int64_t c = 0; c < 300; ++c) {
            const float v = x.data<float>()[r * 300 + c], s = q.scale_at(r, c);
            const float scaled = std::abs(v) / s;
            // Half an ulp of the format at |v|/s, or half the subnormal quantum, in units of s.
            const int e =
                std::max(static_cast<int>(std::floor(std::log2(std::max(scaled, 1e-30f)))),
                         1 - info.exponent_bias);
            const double bound = std::ldexp(1.0, e - info.mantissa_bits - 1) * s * (1 + 1e-6);
            ASSERT_LE(std::abs(back.data<float>()[r * 300 + c] - v), bound)
                << "r " << r << " c " << c;
            ASSERT_LE(scaled, info.max_value * (1 + 1e-6));
          }
        if (pow2)
          for (int64_t i = 0; i < q.scales.numel(); ++i) {
            int exponent;
            EXPECT_EQ(std::frexp(q.scales.data<float>()[i], &exponent), 0.5f);
          }
      }
}

TEST(Fp8Quantize, ZeroNanAndInfinityBlocks) {
  Tensor x = Tensor::zeros({2, 256}, DType::kF32);
  for (int c = 128; c < 256; ++c) x.data<float>()[c] = NAN;  // row 0, second tile: all NaN
  x.data<float>()[256 + 5] = INFINITY;
  x.data<float>()[256 + 6] = 2.0f;
  Fp8Stats stats;
  const auto q = quantize(x, ScaleGranularity::kTile1x128, {}, &stats);
  EXPECT_EQ(q.scales.data<float>()[0], 1.0f);  // all zero
  EXPECT_EQ(q.scales.data<float>()[1], 1.0f);  // all NaN
  const Tensor back = dequantize(q);
  EXPECT_EQ(back.data<float>()[3], 0.0f);
  EXPECT_TRUE(std::isnan(back.data<float>()[200]));
  EXPECT_EQ(back.data<float>()[256 + 6], 2.0f);  // amax from finite values only
  EXPECT_EQ(back.data<float>()[256 + 5], 2.0f);  // +inf saturates to the block's max
  EXPECT_EQ(stats.saturated, 1);
  EXPECT_EQ(stats.values, 512);
}

TEST(Fp8Gemm, MatchesFp64OnDequantisedInputsAndStaysWithinTheFp8Bound) {
  const int64_t m = 37, n = 150, k = 300;  // ragged in every dimension
  Tensor a = random_matrix(m, k, 1), b = random_matrix(n, k, 2, 0.05);
  for (auto b_granularity : {ScaleGranularity::kBlock128x128, ScaleGranularity::kTile1x128}) {
    const auto qa = quantize(a, ScaleGranularity::kTile1x128);
    const auto qb = quantize(b, b_granularity);
    Tensor c = Tensor::empty({m, n}, DType::kF32);
    fp8_gemm(qa, qb, c);
    const Tensor da = dequantize(qa), db = dequantize(qb);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double exact_deq = 0, exact = 0, magnitude = 0;
        for (int64_t kk = 0; kk < k; ++kk) {
          exact_deq += double(da.data<float>()[i * k + kk]) * db.data<float>()[j * k + kk];
          exact += double(a.data<float>()[i * k + kk]) * b.data<float>()[j * k + kk];
          magnitude += std::abs(double(a.data<float>()[i * k + kk]) * b.data<float>()[j * k + kk]);
        }
        const double got = c.data<float>()[i * n + j];
        // fp32 accumulation: a few ulps of the sum of magnitudes.
        ASSERT_NEAR(got, exact_deq, 1e-6 * magnitude) << i << "," << j;
        // FP8 E4M3: each operand off by at most 2^-4 relative (half an ulp, 3 mantissa bits).
        ASSERT_NEAR(got, exact, (2 * 0.0625 + 0.0625 * 0.0625) * magnitude * 1.01) << i << "," << j;
      }
  }
}

TEST(Fp8Gemm, PromotionEvery128KeepsALimitedAccumulatorAccurateAtK4096) {
  // One row of A and one of B, K = 4096, positive values (the case where a long accumulation with
  // ~14 bits loses most: the sum grows and small products fall below its last bit).
  const int64_t k = 4096;
  Tensor a = Tensor::empty({1, k}, DType::kF32), b = Tensor::empty({1, k}, DType::kF32);
  for (int64_t i = 0; i < k; ++i) {
    a.data<float>()[i] = static_cast<float>(0.5 + random_uniform(1, 1, i));
    b.data<float>()[i] = static_cast<float>(0.5 + random_uniform(1, 2, i));
  }
  const auto qa = quantize(a, ScaleGranularity::kTile1x128),
             qb = quantize(b, ScaleGranularity::kTile1x128);
  double exact = 0;
  const Tensor da = dequantize(qa), db = dequantize(qb);
  for (int64_t i = 0; i < k; ++i) exact += double(da.data<float>()[i]) * db.data<float>()[i];
  auto relative_error = [&](Fp8GemmOptions options) {
    Tensor c = Tensor::empty({1, 1}, DType::kF32);
    fp8_gemm(qa, qb, c, options);
    return std::abs(c.data<float>()[0] - exact) / exact;
  };
  const double full = relative_error({});
  const double promoted = relative_error({false, 13, true});
  const double unpromoted = relative_error({false, 13, false});
  RecordProperty("error_fp32", std::to_string(full));
  RecordProperty("error_14bit_promoted", std::to_string(promoted));
  RecordProperty("error_14bit_unpromoted", std::to_string(unpromoted));
  std::printf(
      "K=4096 relative error: fp32 %.2e, 14-bit promoted every 128 %.2e, 14-bit unpromoted %.2e\n",
      full, promoted, unpromoted);
  EXPECT_LT(full, 1e-6);
  EXPECT_LT(promoted, 1e-3);
  EXPECT_GT(unpromoted, 1e-2);  // DeepSeek-V3 reports ~2% at K = 4096 without promotion
  EXPECT_GT(unpromoted, 20 * promoted);
}

TEST(Fp8Gemm, GroupedOverExpertsEqualsOneGemmPerGroup) {
  // Three experts with 5, 0 and 130 rows (an empty group, a group past one block).
  const std::vector<int64_t> offsets = {0, 5, 5, 135};
  Tensor a = random_matrix(135, 200, 7);
  const auto qa = quantize(a, ScaleGranularity::kTile1x128);
  std::vector<BlockScaledFp8> weights;
  for (int g = 0; g < 3; ++g)
    weights.push_back(quantize(random_matrix(70, 200, 10 + g), ScaleGranularity::kBlock128x128));
  std::vector<const BlockScaledFp8*> b = {&weights[0], &weights[1], &weights[2]};
  Tensor grouped = Tensor::empty({135, 70}, DType::kF32);
  fp8_grouped_gemm(qa, offsets, b, grouped);
  for (int g = 0; g < 3; ++g) {
    if (offsets[g] == offsets[g + 1]) continue;
    // Quantising only the group's rows gives the same codes (scales are per row).
    const auto qg = quantize(a.rows(offsets[g], offsets[g + 1]), ScaleGranularity::kTile1x128);
    Tensor c = Tensor::empty({offsets[g + 1] - offsets[g], 70}, DType::kF32);
    fp8_gemm(qg, weights[g], c);
    for (int64_t i = 0; i < c.numel(); ++i)
      ASSERT_EQ(c.data<float>()[i], grouped.data<float>()[offsets[g] * 70 + i]);
  }
  EXPECT_THROW(fp8_grouped_gemm(qa, {0, 5, 135}, b, grouped), Error);
}

TEST(Fp8Layout, TransposedBlocksAndPackedRowsAreExact) {
  Tensor w = random_matrix(200, 130, 5);
  const auto q = quantize(w, ScaleGranularity::kBlock128x128);
  const auto t = transpose_blocks(q);
  const Tensor dq = dequantize(q), dt = dequantize(t);
  for (int64_t r = 0; r < 200; ++r)
    for (int64_t c = 0; c < 130; ++c)
      ASSERT_EQ(dq.data<float>()[r * 130 + c], dt.data<float>()[c * 200 + r]);

  Tensor x = random_matrix(7, 300, 6);
  const auto qx = quantize(x, ScaleGranularity::kTile1x128);
  const Tensor payload = pack_fp8_rows(qx);
  EXPECT_EQ(payload.dim(1), 300 + 3 * 4);
  const auto back = unpack_fp8_rows(payload, 300, Fp8Format::kE4M3);
  const Tensor d1 = dequantize(qx), d2 = dequantize(back);
  for (int64_t i = 0; i < 7 * 300; ++i) ASSERT_EQ(d1.data<float>()[i], d2.data<float>()[i]);
  EXPECT_THROW(unpack_fp8_rows(payload, 299, Fp8Format::kE4M3), Error);

  // quantize_transposed is the 1x128 quantisation of xᵀ.
  const auto qt = quantize_transposed(x);
  EXPECT_EQ(qt.rows(), 300);
  EXPECT_EQ(qt.cols(), 7);
  const Tensor dxt = dequantize(qt);
  for (int64_t r = 0; r < 7; ++r)
    for (int64_t c = 0; c < 300; ++c)
      EXPECT_NEAR(dxt.data<float>()[c * 7 + r], x.data<float>()[r * 300 + c],
                  std::abs(x.data<float>()[r * 300 + c]) * 0.0625 + 1e-3);
}

}  // namespace
}  // namespace tandem::kernels

// cuBLASLt's block-scaled FP8 GEMM plans and scale layouts (kernels/fp8_gemm_plan.h), checked
// without a GPU: the layouts NVIDIA documents, the refusals, and an expert loop's packed scales.
namespace tandem::kernels {
namespace {

TEST(Fp8GemmPlan, ScaleLayoutsAreCublasLts) {
  // 1x128: [ceil(K/128), pad4(rows)]; 128x128: [ceil(rows/128), pad4(ceil(K/128))].
  const CublasScaleLayout tiles = cublas_scale_layout(ScaleGranularity::kTile1x128, 4097, 7168);
  EXPECT_EQ(tiles.outer, 56);
  EXPECT_EQ(tiles.inner, 4100);
  const CublasScaleLayout blocks =
      cublas_scale_layout(ScaleGranularity::kBlock128x128, 7168, 2048 + 128);
  EXPECT_EQ(blocks.outer, 56);
  EXPECT_EQ(blocks.inner, 20);  // 17 blocks of K, padded to 20
  const Fp8GemmPlan plan = plan_fp8_gemm(4096, 7168, 16384, ScaleGranularity::kTile1x128,
                                         ScaleGranularity::kBlock128x128);
  EXPECT_EQ(plan.lda, 16384);
  EXPECT_EQ(plan.ldb, 16384);
  EXPECT_EQ(plan.ldc, 7168);
  EXPECT_EQ(plan.a_scales.elements(), 128 * 4096);
  EXPECT_EQ(plan.b_scales.elements(), 56 * 128);
}

TEST(Fp8GemmPlan, RefusesWhatCublasLtCannotDo) {
  auto refused = [](int64_t m, int64_t n, int64_t k, ScaleGranularity a, ScaleGranularity b,
                    const std::string& why) {
    try {
      plan_fp8_gemm(m, n, k, a, b);
      ADD_FAILURE() << "planned m " << m << " n " << n << " k " << k;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  };
  const auto tile = ScaleGranularity::kTile1x128, block = ScaleGranularity::kBlock128x128;
  refused(128, 128, 128, block, block, "no 128x128 x 128x128 block scaling");
  refused(128, 128, 136 + 4, tile, tile, "K (the leading dimension of both fp8 operands)");
  refused(128, 100, 128, tile, block, "N (the output's leading dimension)");
}

TEST(Fp8GemmPlan, ExpertLoopSkipsEmptyExpertsAndPacksTheirScales) {
  // Row counts 0, 1, 5, 128, 0, 333 (offsets of the contiguous layout).
  const std::vector<int64_t> offsets = {0, 0, 1, 6, 134, 134, 467};
  const GroupedFp8GemmPlan plan =
      plan_grouped_fp8_gemm(offsets, 2048, 7168, ScaleGranularity::kBlock128x128);
  EXPECT_EQ(plan.experts, (std::vector<int64_t>{1, 2, 3, 5}));
  ASSERT_EQ(plan.gemms.size(), 4u);
  EXPECT_EQ(plan.gemms[0].m, 1);
  EXPECT_EQ(plan.gemms[3].m, 333);
  // Each expert's A scales are [56, pad4(rows)]: 4, 8, 128, 336 columns.
  EXPECT_EQ(plan.a_scale_offsets, (std::vector<int64_t>{0, 56 * 4, 56 * 12, 56 * 140}));
  EXPECT_EQ(plan.a_scale_elements, 56 * (4 + 8 + 128 + 336));
  EXPECT_THROW(plan_grouped_fp8_gemm({0, 5, 3}, 2048, 7168, ScaleGranularity::kTile1x128), Error);
}

TEST(Fp8GemmPlan, ScalesConvertToCublasLtsLayout) {
  Tensor x = Tensor::empty({6, 300}, DType::kF32);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = static_cast<float>(i % 97) - 40;
  const BlockScaledFp8 q = quantize(x, ScaleGranularity::kTile1x128);
  const Tensor t = to_cublas_scales(q);
  ASSERT_EQ(t.shape(), (Shape{3, 8}));  // ceil(300/128) x pad4(6)
  for (int64_t r = 0; r < 6; ++r)
    for (int64_t kb = 0; kb < 3; ++kb)
      EXPECT_EQ(t.data<float>()[kb * 8 + r], q.scale_at(r, kb * 128));
  for (int64_t kb = 0; kb < 3; ++kb)
    for (int64_t r = 6; r < 8; ++r) EXPECT_EQ(t.data<float>()[kb * 8 + r], 0.0f);
  const BlockScaledFp8 w = quantize(x, ScaleGranularity::kBlock128x128);
  const Tensor wt = to_cublas_scales(w);
  ASSERT_EQ(wt.shape(), (Shape{1, 4}));  // ceil(6/128) x pad4(ceil(300/128))
  for (int64_t kb = 0; kb < 3; ++kb) EXPECT_EQ(wt.data<float>()[kb], w.scale_at(0, kb * 128));
  EXPECT_EQ(wt.data<float>()[3], 0.0f);
}

}  // namespace
}  // namespace tandem::kernels
