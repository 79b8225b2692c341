// A small SIMT emulator: compiles CUDA kernels as plain C++ (g++) so CPU-only machines can run them.
//
// Why hand-written: no CPU CUDA runtime exists that keeps __syncthreads() a real barrier and
// warp shuffles warp-wide (a loop over threads is neither). Used by tests/test_cuda_on_cpu.py.
//
// Model. A launch runs the grid's blocks one after another. Each thread of a block is a
// cooperative fiber (ucontext) that runs until it reaches a synchronization point:
//   __syncthreads()        block barrier: every thread of the block must arrive before any leaves;
//   __shfl_*_sync, __syncwarp  warp barrier over the warp's 32 lanes (fewer in a partial last warp).
// The scheduler always resumes the runnable fiber that comes first in the block's priority
// order, and releases a barrier as soon as its last thread arrives. The order is adversarial
// and rotates with the block index (forward, reverse, shuffled), so a read of shared memory
// that is missing its barrier sees stale data in at least one order: forward order runs thread
// 0 ahead of the other warps (a read too early), reverse order runs the other warps ahead into
// their next write (a reuse too early). Dynamic shared memory is filled with NaN bytes at each
// block's start. A barrier that some threads can never reach (a thread exited, or threads wait
// at different barriers) is reported as a launch error, as is an invalid launch configuration
// or a misaligned vector load through __ldg.
//
// Static __shared__ variables become function-local statics: shared by the threads of the block
// running (blocks never run concurrently). `kernel<<<grid, block, smem, stream>>>(args)` and
// `extern __shared__ T name[];` are not C++: the test rewrites them to ::simt::launch(...) and
// ::simt::dynamic_shared() before compiling (tests/test_cuda_on_cpu.py, translate()).
//
// Not modelled: memory ordering between blocks (blocks run in sequence), __threadfence
// (a no-op), concurrent streams, the mask of *_sync (all live lanes of the warp must take part).
#pragma once
#include <stdint.h>
#include <string.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

// ---- CUDA keywords and types -------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static

struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) uint4 { unsigned x, y, z, w; };
struct alignas(8) float2 { float x, y; };

typedef enum {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorLaunchFailure = 719,
} cudaError_t;
typedef void* cudaStream_t;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

// fp16 / bf16 storage with round-to-nearest-even conversions (as __float2half_rn etc.).
struct __half { uint16_t bits; };
struct __nv_bfloat16 { uint16_t bits; };

inline float __half2float(__half h) {
  const uint32_t sign = uint32_t(h.bits & 0x8000u) << 16, exp = (h.bits >> 10) & 0x1f, man = h.bits & 0x3ffu;
  float magnitude;
  if (exp == 0) {
    magnitude = std::ldexp(float(man), -24);  // subnormal
  } else if (exp == 31) {
    magnitude = man ? NAN : INFINITY;
  } else {
    magnitude = std::ldexp(float(man | 0x400u), int(exp) - 25);
  }
  uint32_t out;
  memcpy(&out, &magnitude, 4);
  out |= sign;
  float f;
  memcpy(&f, &out, 4);
  return f;
}
inline __half __float2half_rn(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  const uint16_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x > 0x7f800000u) return {uint16_t(sign | 0x7e00u)};  // NaN
  if (x >= 0x477ff000u) return {uint16_t(sign | 0x7c00u)};  // >= 65520 rounds to inf
  if (x < 0x38800000u) {  // below 2^-14: a subnormal half, in units of 2^-24 (nearbyint: to even)
    float a;
    memcpy(&a, &x, 4);
    return {uint16_t(sign | uint16_t(std::nearbyint(a * 16777216.0f)))};
  }
  uint32_t h = (x - 0x38000000u) >> 13;  // rebias the exponent (127 -> 15), keep 10 mantissa bits
  const uint32_t rest = x & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) ++h;  // round to nearest even
  return {uint16_t(sign | h)};
}
inline float __bfloat162float(__nv_bfloat16 h) {
  const uint32_t u = uint32_t(h.bits) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  if (std::isnan(f)) return {0x7fc0};
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return {uint16_t(u >> 16)};
}

namespace simt {

// ---- fibers and the block scheduler -------------------------------------------------------
enum class State { kRunnable, kAtBlockBarrier, kAtWarpBarrier, kDone };

struct Fiber {
  ucontext_t context;
  dim3 index;
  State state = State::kRunnable;
};

struct Block {
  dim3 index, dim, grid;
  int threads = 0, current = -1;
  std::vector<Fiber> fibers;
  std::vector<int> order;  // scheduling priority: order[0] runs first
  ucontext_t scheduler;
  std::vector<uint64_t> exchange;  // warp shuffles: [warp][buffer 0/1][lane] 16-byte slots x2
  std::vector<int> shuffle_parity;  // per thread: which exchange buffer its next shuffle uses
  const std::function<void()>* body = nullptr;
  std::string error;
};

inline Block*& current_block() {
  static thread_local Block* block = nullptr;
  return block;
}
inline Fiber& current_fiber() { return current_block()->fibers[current_block()->current]; }
inline int warp_of(int t) { return t / 32; }

inline void fail(const std::string& message) {
  Block& b = *current_block();
  if (b.error.empty()) b.error = message;
}

// Releases the block barrier or the warp barrier of thread t when t was the last to arrive.
inline void try_release(Block& b, int t) {
  if (b.fibers[t].state == State::kAtBlockBarrier) {
    for (const Fiber& f : b.fibers) {
      if (f.state != State::kAtBlockBarrier) return;
    }
    for (Fiber& f : b.fibers) f.state = State::kRunnable;
    return;
  }
  const int lo = warp_of(t) * 32, hi = std::min(lo + 32, b.threads);
  for (int i = lo; i < hi; ++i) {
    if (b.fibers[i].state != State::kAtWarpBarrier) return;
  }
  for (int i = lo; i < hi; ++i) b.fibers[i].state = State::kRunnable;
}

// Called by a fiber at a synchronization point: park it and return to the scheduler.
inline void wait(State barrier) {
  Block& b = *current_block();
  Fiber& f = b.fibers[b.current];
  f.state = barrier;
  try_release(b, b.current);
  swapcontext(&f.context, &b.scheduler);
}

inline void fiber_entry() {
  Block& b = *current_block();
  (*b.body)();
  b.fibers[b.current].state = State::kDone;
  for (int i = 0; i < b.threads; ++i) {  // threads waiting for this one can now never be released
    if (b.fibers[i].state == State::kAtWarpBarrier && warp_of(i) == warp_of(b.current)) {
      fail("thread " + std::to_string(b.current) + " exited while lanes of its warp wait in a warp barrier");
    }
    if (b.fibers[i].state == State::kAtBlockBarrier) {
      fail("thread " + std::to_string(b.current) + " exited while others wait in __syncthreads()");
    }
  }
}  // returns to uc_link: the scheduler

struct Stacks {  // one stack per thread of a block, reused by every block and launch
  static constexpr size_t kBytes = 64 * 1024;
  std::vector<std::unique_ptr<char[]>> stacks;
  char* get(int i) {
    while (int(stacks.size()) <= i) stacks.emplace_back(new char[kBytes]);
    return stacks[i].get();
  }
};

// Runs one block to completion; returns false (with b.error set) on a deadlock or a failure.
inline bool run_block(Block& b, Stacks& stacks) {
  current_block() = &b;
  for (int t = 0; t < b.threads; ++t) {
    Fiber& f = b.fibers[t];
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = stacks.get(t);
    f.context.uc_stack.ss_size = Stacks::kBytes;
    f.context.uc_link = &b.scheduler;
    makecontext(&f.context, fiber_entry, 0);
  }
  while (b.error.empty()) {
    int next = -1;
    for (int t : b.order) {
      if (b.fibers[t].state == State::kRunnable) {
        next = t;
        break;
      }
    }
    if (next < 0) break;
    b.current = next;
    swapcontext(&b.scheduler, &b.fibers[next].context);
  }
  current_block() = nullptr;
  if (!b.error.empty()) return false;
  for (int t = 0; t < b.threads; ++t) {
    if (b.fibers[t].state != State::kDone) {
      b.error = "deadlock: thread " + std::to_string(t) + " waits in a barrier that no other thread reaches";
      return false;
    }
  }
  return true;
}

// ---- launches -------------------------------------------------------------------------------
struct Runtime {
  cudaError_t last_error = cudaSuccess;
  std::string last_message;
  int schedule_offset = 0;  // rotates the per-block schedules between runs
  std::map<const void*, int> max_dynamic_smem;  // cudaFuncSetAttribute
  std::vector<unsigned char> dynamic_smem;
  Stacks stacks;
};
inline Runtime& runtime() {
  static Runtime r;
  return r;
}

inline void launch_error(cudaError_t code, const std::string& message) {
  Runtime& r = runtime();
  if (r.last_error == cudaSuccess) {
    r.last_error = code;
    r.last_message = message;
  }
}

inline unsigned char* dynamic_shared() { return runtime().dynamic_smem.data(); }

struct Launch {
  dim3 grid, block;
  size_t smem;

  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), Args... args) const {
    Runtime& r = runtime();
    const long threads = long(block.x) * block.y * block.z;
    if (threads < 1 || threads > 1024 || block.z > 64 || grid.x < 1 || grid.y < 1 || grid.z < 1 ||
        grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
      return launch_error(cudaErrorInvalidConfiguration, "invalid grid or block dimensions");
    }
    auto limit = r.max_dynamic_smem.find(reinterpret_cast<const void*>(kernel));
    if (smem > size_t(limit == r.max_dynamic_smem.end() ? 48 * 1024 : limit->second)) {
      return launch_error(cudaErrorInvalidValue, "dynamic shared memory " + std::to_string(smem) +
                                                     " bytes exceeds the kernel's limit");
    }
    const std::function<void()> body = [&] { kernel(Params(args)...); };
    r.dynamic_smem.assign(smem + 16, 0);
    for (unsigned z = 0; z < grid.z; ++z) {
      for (unsigned y = 0; y < grid.y; ++y) {
        for (unsigned x = 0; x < grid.x; ++x) {
          Block b;
          b.index = dim3(x, y, z);
          b.dim = block;
          b.grid = grid;
          b.threads = int(threads);
          b.fibers.resize(threads);
          for (int t = 0; t < b.threads; ++t) {
            b.fibers[t].index = dim3(t % block.x, t / block.x % block.y, t / (block.x * block.y));
          }
          b.exchange.assign(size_t(threads + 31) / 32 * 2 * 32 * 2, 0);
          b.shuffle_parity.assign(threads, 0);
          const long linear = (long(z) * grid.y + y) * grid.x + x;
          b.order.resize(threads);
          std::iota(b.order.begin(), b.order.end(), 0);
          switch ((linear + r.schedule_offset) % 3) {
            case 0: break;  // forward: thread 0 first
            case 1: std::reverse(b.order.begin(), b.order.end()); break;
            default: std::shuffle(b.order.begin(), b.order.end(), std::mt19937(unsigned(linear)));
          }
          std::fill(r.dynamic_smem.begin(), r.dynamic_smem.end(), 0xff);  // NaN in every float type
          b.body = &body;
          if (!run_block(b, r.stacks)) {
            return launch_error(cudaErrorLaunchFailure, "block (" + std::to_string(x) + ", " + std::to_string(y) +
                                                            ", " + std::to_string(z) + "): " + b.error);
          }
        }
      }
    }
  }
};

inline Launch launch(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t = nullptr) { return {grid, block, smem}; }

// ---- thread indexing, barriers, warp shuffles ----------------------------------------------
inline void syncthreads() { wait(State::kAtBlockBarrier); }

// Exchanges one value over the warp: every live lane writes `v` to its slot of the current
// buffer, waits at the warp barrier, then reads lane `source(lane)` (its own value when out of
// range). Buffers alternate, so one barrier per shuffle suffices: a lane writes buffer j again
// only after a later barrier, which every lane reaches after finishing its read of buffer j.
template <typename T, typename Source>
T shuffle(T v, Source source) {
  static_assert(sizeof(T) <= 16, "shuffle of a type wider than 16 bytes");
  Block& b = *current_block();
  const int t = b.current, warp = warp_of(t), lane = t % 32, lanes = std::min(32, b.threads - warp * 32);
  int& parity = b.shuffle_parity[t];
  uint64_t* buffer = b.exchange.data() + size_t(warp * 2 + parity) * 32 * 2;
  parity ^= 1;
  memcpy(buffer + lane * 2, &v, sizeof(T));
  wait(State::kAtWarpBarrier);
  const int from = source(lane);
  if (from < 0 || from >= lanes) return v;
  T out;
  memcpy(&out, buffer + from * 2, sizeof(T));
  return out;
}

}  // namespace simt

#define threadIdx (::simt::current_fiber().index)
#define blockIdx (::simt::current_block()->index)
#define blockDim (::simt::current_block()->dim)
#define gridDim (::simt::current_block()->grid)
#define warpSize 32

inline void __syncthreads() { simt::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { simt::wait(simt::State::kAtWarpBarrier); }
inline void __threadfence() {}

template <typename T>
T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
  return simt::shuffle(v, [&](int lane) { return lane % width + int(delta) < width ? lane + int(delta) : -1; });
}
template <typename T>
T __shfl_up_sync(unsigned, T v, unsigned delta, int width = 32) {
  return simt::shuffle(v, [&](int lane) { return lane % width >= int(delta) ? lane - int(delta) : -1; });
}
template <typename T>
T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
  return simt::shuffle(v, [&](int lane) { return (lane ^ mask) / width == lane / width ? lane ^ mask : lane; });
}
template <typename T>
T __shfl_sync(unsigned, T v, int src, int width = 32) {
  return simt::shuffle(v, [&](int lane) { return lane / width * width + src % width; });
}

// Atomics: fibers switch only at barriers, so a read-modify-write is atomic by construction.
template <typename T>
T atomicAdd(T* address, T v) {
  const T old = *address;
  *address = old + v;
  return old;
}
template <typename T>
T atomicMax(T* address, T v) {
  const T old = *address;
  *address = std::max(old, v);
  return old;
}

// Read-only / cache-hinted loads; vector loads must be aligned to their size, as on a GPU.
template <typename T>
T __ldg(const T* p) {
  if (reinterpret_cast<uintptr_t>(p) % alignof(T) != 0) {
    simt::fail("misaligned __ldg of a " + std::to_string(sizeof(T)) + "-byte value");
    return T{};
  }
  return *p;
}
template <typename T>
T __ldcg(const T* p) {
  return __ldg(p);
}

inline cudaError_t cudaGetLastError() {
  simt::Runtime& r = simt::runtime();
  const cudaError_t e = r.last_error;
  r.last_error = cudaSuccess;
  return e;
}
inline cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t = nullptr) {
  memset(p, value, bytes);
  return cudaSuccess;
}
template <typename F>
cudaError_t cudaFuncSetAttribute(F* kernel, cudaFuncAttribute attribute, int value) {
  if (attribute != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || value > 227 * 1024) {
    return cudaErrorInvalidValue;
  }
  simt::runtime().max_dynamic_smem[reinterpret_cast<const void*>(kernel)] = value;
  return cudaSuccess;
}

// Device-side min/max of CUDA's math headers (same-type overloads).
template <typename T>
T min(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
T max(T a, T b) {
  return a < b ? b : a;
}
