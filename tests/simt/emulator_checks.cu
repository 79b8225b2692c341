// Kernels that check the SIMT emulator itself (tests/test_cuda_on_cpu.py): warp shuffles,
// atomics, and the failures it must report instead of computing something.
#include <cuda_runtime.h>

__global__ void shuffles(const int* in, int* out) {
  const int v = in[threadIdx.x], t = threadIdx.x;
  out[4 * t + 0] = __shfl_down_sync(0xffffffffu, v, 3);
  out[4 * t + 1] = __shfl_up_sync(0xffffffffu, v, 5);
  out[4 * t + 2] = __shfl_xor_sync(0xffffffffu, v, 9);
  out[4 * t + 3] = __shfl_sync(0xffffffffu, v, 7);
}

__global__ void atomics(int* count, float* total) {
  atomicAdd(count, 1);
  atomicAdd(total, 0.5f);
}

__global__ void divergent_barrier(int* out) {
  if (threadIdx.x < 32) __syncthreads();  // only one warp reaches it: a hang on a GPU
  out[threadIdx.x] = 1;
}

__global__ void exit_before_barrier(int* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void misaligned_vector_load(const float* in, float* out) {
  const float4 v = __ldg(reinterpret_cast<const float4*>(in + 1));  // 4-byte aligned only
  out[threadIdx.x] = v.x;
}

__global__ void dynamic_shared(float* out) {
  extern __shared__ float scratch[];
  scratch[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  out[threadIdx.x] = scratch[blockDim.x - 1 - threadIdx.x];
}

// which: 0 shuffles (64 threads), 1 atomics (3 blocks of 100), 2 divergent barrier, 3 exit before
// a barrier, 4 misaligned load, 5 dynamic shared memory of `bytes` (no opt-in), 6 the same after
// cudaFuncSetAttribute. Returns the launch's cudaError_t.
extern "C" int run_check(int which, void* a, void* b, int bytes) {
  switch (which) {
    case 0: shuffles<<<1, 64>>>(static_cast<const int*>(a), static_cast<int*>(b)); break;
    case 1: atomics<<<3, 100>>>(static_cast<int*>(a), static_cast<float*>(b)); break;
    case 2: divergent_barrier<<<1, 64>>>(static_cast<int*>(a)); break;
    case 3: exit_before_barrier<<<1, 64>>>(static_cast<int*>(a)); break;
    case 4: misaligned_vector_load<<<1, 32>>>(static_cast<const float*>(a), static_cast<float*>(b)); break;
    case 5: dynamic_shared<<<2, 96, bytes>>>(static_cast<float*>(a)); break;
    case 6:
      cudaFuncSetAttribute(dynamic_shared, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
      dynamic_shared<<<2, 96, bytes>>>(static_cast<float*>(a));
      break;
  }
  return cudaGetLastError();
}
