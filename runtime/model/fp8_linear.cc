// Linear layers in FP8 or fp32 behind one interface.
#include "runtime/model/fp8_linear.h"

#include "runtime/model/ops.h"

namespace tandem {

using kernels::ScaleGranularity;

Fp8Settings Fp8Settings::from_config(const Fp8Config& config, kernels::Fp8Stats* stats) {
  Fp8Settings s;
  s.enabled = config.enabled;
  s.options.format = config.format;
  s.options.power_of_two_scales = config.power_of_two_scales;
  s.stats = stats;
  return s;
}

Tensor linear(const Tensor& x, const Parameter& w, const Fp8Settings& settings,
              LinearSaved& saved) {
  saved.fp8 = settings.enabled;
  if (!settings.enabled) {
    saved.x = x;
    return linear(x, w);
  }
  Tensor y = Tensor::empty({x.dim(0), w.value.dim(0)}, x.dtype(), x.device());
  saved.xq = kernels::quantize(x, ScaleGranularity::kTile1x128, settings.options, settings.stats);
  saved.wq =
      kernels::quantize(w.value, ScaleGranularity::kBlock128x128, settings.options, settings.stats);
  kernels::fp8_gemm(saved.xq, saved.wq, y);
  return y;
}

Tensor linear_backward(const Tensor& dy, const LinearSaved& saved, Parameter& w,
                       const Fp8Settings& settings, BlockState& state) {
  if (!saved.fp8) return linear_backward(dy, saved.x, w, state);
  Tensor dx = Tensor::empty({dy.dim(0), w.value.dim(1)}, dy.dtype(), dy.device());
  // dgrad: dx[N, in] = dy[N, out] · w[out, in]; B = wᵀ [in, out] blocked along K = out.
  const auto dyq =
      kernels::quantize(dy, ScaleGranularity::kTile1x128, settings.options, settings.stats);
  kernels::fp8_gemm(dyq, kernels::transpose_blocks(saved.wq), dx);
  // wgrad: dw[out, in] += dyᵀ[out, N] · (xᵀ[in, N])ᵀ, both quantised along the tokens. The cached
  // FP8 input is dequantised and re-quantised in the transposed direction, as DeepSeek-V3 does.
  state.deferred_wgrad.push_back([dy, xq = saved.xq, &w, settings] {
    const auto a = kernels::quantize_transposed(dy, settings.options, settings.stats);
    const auto b =
        kernels::quantize_transposed(kernels::dequantize(xq), settings.options, settings.stats);
    kernels::fp8_gemm(a, b, w.grad, {.accumulate = true});
  });
  return dx;
}

}  // namespace tandem
