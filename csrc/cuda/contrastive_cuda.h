/* C launch interface of the CUDA contrastive L1-ratio kernels (no torch types).
 *
 * Layout and formulas: ../contrastive_math.h. Anchor, positive (and the gradients) are flat
 * [B, m] (sample b at b * m); negative k of sample b starts at k * neg_stride_k +
 * b * neg_stride_b; every sample and negative holds its m elements in the same order (any
 * memory format, as long as all share it). Inputs are of `dtype`; loss, num, den and
 * grad_loss are of its accumulation type (double for CSD_FLOAT64, float otherwise). Every
 * kernel runs on `stream`. */
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CSD_FLOAT32 = 0, CSD_FLOAT16 = 1, CSD_BFLOAT16 = 2, CSD_FLOAT64 = 3 } csd_dtype;

/* Bytes of the forward workspace (per-tile partial sums and a counter); 0 for an unknown dtype. */
size_t csd_contrastive_forward_workspace(csd_dtype dtype, int64_t B, int64_t K, int64_t m);

/* One tap: num [B] = mean |a - p|, den [K, B] = mean |a - n_k| and
 * loss = weight * CL (+ the previous *loss when accumulate != 0, so taps launched in order on
 * one stream sum deterministically); per_sample: 0 "batch", 1 "sample". */
cudaError_t csd_contrastive_forward(csd_dtype dtype, const void* anchor, const void* positive, const void* negatives,
                                    int64_t B, int64_t K, int64_t m, int64_t neg_stride_k, int64_t neg_stride_b,
                                    int per_sample, double eps, double weight, int accumulate, void* workspace,
                                    void* loss, void* num, void* den, cudaStream_t stream);

/* One tap, gradient of weight * CL scaled by *grad_loss: grad_anchor [B, m]; grad_positive
 * [B, m] unless NULL. */
cudaError_t csd_contrastive_backward(csd_dtype dtype, const void* grad_loss, const void* anchor, const void* positive,
                                     const void* negatives, const void* num, const void* den, int64_t B, int64_t K,
                                     int64_t m, int64_t neg_stride_k, int64_t neg_stride_b, int per_sample,
                                     double eps, double weight, void* grad_anchor,
                                     void* grad_positive, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
