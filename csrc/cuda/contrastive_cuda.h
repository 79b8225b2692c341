/* C launch interface of the CUDA contrastive L1-ratio kernels (no torch types).
 *
 * Layout and formulas: ../contrastive_math.h. Tensors are contiguous; anchor/positive are
 * [B, m]; negative k of sample b starts at k * neg_stride_k + b * neg_stride_b. Inputs are
 * of `dtype`; loss, num, den, grad_loss and the workspaces are of its accumulation type
 * (double for CSD_FLOAT64, float otherwise). Every kernel runs on `stream`. */
#pragma once
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CSD_FLOAT32 = 0, CSD_FLOAT16 = 1, CSD_BFLOAT16 = 2, CSD_FLOAT64 = 3 } csd_dtype;

/* Elements (of the accumulation type) of the forward workspace: per-chunk partial sums. */
int64_t csd_contrastive_forward_workspace(int64_t B, int64_t K, int64_t m);

/* One tap: num [B] = mean |a - p|, den [K, B] = mean |a - n_k| and
 * loss = weight * CL (+ the previous *loss when accumulate != 0, so taps launched in order on
 * one stream sum deterministically); per_sample: 0 "batch", 1 "sample". */
cudaError_t csd_contrastive_forward(csd_dtype dtype, const void* anchor, const void* positive, const void* negatives,
                                    int64_t B, int64_t K, int64_t m, int64_t neg_stride_k, int64_t neg_stride_b,
                                    int per_sample, double eps, double weight, int accumulate, void* workspace,
                                    void* loss, void* num, void* den, cudaStream_t stream);

/* One tap, gradient of weight * CL scaled by *grad_loss: grad_anchor [B, m]; grad_positive
 * [B, m] unless NULL. workspace: 2 * B accumulation elements. */
cudaError_t csd_contrastive_backward(csd_dtype dtype, const void* grad_loss, const void* anchor, const void* positive,
                                     const void* negatives, const void* num, const void* den, int64_t B, int64_t K,
                                     int64_t m, int64_t neg_stride_k, int64_t neg_stride_b, int per_sample,
                                     double eps, double weight, void* workspace, void* grad_anchor,
                                     void* grad_positive, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
