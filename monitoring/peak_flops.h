// This rank's peak FLOP/s, measured once at startup: the denominator of the model FLOP
// utilisation metric. A datasheet peak is unknown on a CPU and wrong under a shared node; an
// sgemm on the rank's own threads, while the node's other ranks run theirs, is what this rank
// can actually get.
#pragma once

namespace tandem::monitoring {

// The best of `repeats` fp32 GEMMs of n × n × n (OpenBLAS cblas_sgemm on the current OpenMP
// thread count), after one warm-up, in FLOP/s (2 n^3 per GEMM). n = 1024 takes about 20-50 ms
// per GEMM on one core of a current x86 CPU.
double measure_sgemm_peak_flops(int n = 1024, int repeats = 3);

}  // namespace tandem::monitoring
