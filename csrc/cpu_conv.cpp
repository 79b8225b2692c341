// torch.library ops of the CPU inference backend (csd_fast/native.py), namespace csd_cpu:
//   conv2d(...)   the fused NHWC 'same' conv of cpu_conv.h, dispatched at run time to AVX-512
//                 (fp32, bf16 with AVX512_BF16), AVX2+FMA (fp32) or the portable scalar path; out
//                 (and residual) may be fp32 or bf16 whatever x is (a bf16 model's fp32 head and tail);
//   ca_apply(...) RCAN's channel attention from pooled sums: out = x + r * sigmoid(up(relu(down(mean))));
//   res_block(...) [relu](x + res_scale * conv2(relu(conv1(x)))) fused over row tiles: each thread
//                 computes conv1 for its tile (plus a one-row halo) into a private buffer that
//                 stays in L2, then conv2 from it, so the intermediate never reaches memory;
//   best_isa(bf16) the path ``isa=0`` picks on this machine (1 scalar, 2 avx2, 3 avx512).
// Threads: torch's thread count, rows shared out in chunks by the pool of cpu_pool.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <mutex>
#include <vector>

#include "cpu_conv.h"
#include "cpu_pool.h"

namespace csd_cpu {
namespace {

enum Isa : int64_t { kAuto = 0, kScalar = 1, kAvx2 = 2, kAvx512 = 3 };

int64_t best_isa(bool bf16) {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (avx512 && (!bf16 || __builtin_cpu_supports("avx512bf16"))) return kAvx512;
  if (!bf16 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kAvx2;
  return kScalar;  // bf16 without AVX512_BF16 runs the scalar path
}

// The rows function for x (and w) in bf16 or fp32 and out (and residual) in bf16 or fp32. Any bf16
// operand needs AVX512_BF16 for the AVX-512 path, else runs the scalar path.
RowsFn pick(int64_t isa, bool x_bf16, bool out_bf16) {
  const bool bf16 = x_bf16 || out_bf16;
  const int64_t best = best_isa(bf16);
  TORCH_CHECK_VALUE(isa >= kAuto && isa <= kAvx512, "isa: expected 0 (auto), 1 (scalar), 2 (avx2) or 3 (avx512), got ", isa);
  if (bf16 && isa == kAvx2) isa = kScalar;  // no bf16 dot products in AVX2: the scalar path
  TORCH_CHECK_VALUE(isa <= best, "isa: ", isa, " is not supported by this CPU for ", bf16 ? "bf16" : "fp32",
                    " (best: ", best, ")");
  if (isa == kAuto) isa = best;
  if (x_bf16 != out_bf16) {
    if (isa == kAvx512) return x_bf16 ? avx512::conv_rows_bf16_out_f32 : avx512::conv_rows_f32_out_bf16;
    return x_bf16 ? scalar::conv_rows_bf16_out_f32 : scalar::conv_rows_f32_out_bf16;
  }
  if (isa == kAvx512) return bf16 ? avx512::conv_rows_bf16 : avx512::conv_rows_f32;
  if (isa == kAvx2) return avx2::conv_rows_f32;
  return bf16 ? scalar::conv_rows_bf16 : scalar::conv_rows_f32;
}

void check_act(const at::Tensor& t, const char* name, at::ScalarType dtype) {
  TORCH_CHECK_VALUE(t.device().is_cpu() && t.dim() == 4, name, ": expected a 4-D CPU tensor, got ", t.sizes(), " on ", t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == dtype, name, ": expected dtype ", dtype, ", got ", t.scalar_type());
}

void check_weight(const at::Tensor& w, const std::optional<at::Tensor>& bias, at::ScalarType dt, int64_t cin, int64_t cout,
                  int64_t k, const char* wname, const char* bname) {
  const int64_t CB = (cout + 15) / 16, cin_w = dt == at::kBFloat16 ? (cin + 1) / 2 * 2 : cin;
  TORCH_CHECK_TYPE(w.scalar_type() == dt, wname, ": expected dtype ", dt, ", got ", w.scalar_type());
  TORCH_CHECK_VALUE(w.is_contiguous() && w.numel() == CB * k * k * cin_w * 16, wname, ": expected a contiguous packed weight of ",
                    CB * k * k * cin_w * 16, " elements for Cin=", cin, " cout=", cout, " k=", k, ", got shape ", w.sizes());
  if (bias)
    TORCH_CHECK_VALUE(bias->scalar_type() == at::kFloat && bias->is_contiguous() && bias->numel() == CB * 16,
                      bname, ": expected a contiguous fp32 tensor of ", CB * 16, " elements, got ", bias->sizes(), " ", bias->scalar_type());
}

// ConvArgs for x [N, Cin, H, W] (channels contiguous) -> out, without residual/epilogue options.
ConvArgs make_args(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias, int64_t k, int64_t cout,
                   const at::Tensor& out) {
  ConvArgs a{};
  a.N = x.size(0), a.Cin = x.size(1), a.H = x.size(2), a.W = x.size(3), a.Cout = cout, a.K = k;
  a.x = x.data_ptr(), a.xn = x.stride(0), a.xc = 1, a.xy = x.stride(2), a.xx = x.stride(3);
  a.w = w.data_ptr();
  a.bias = bias ? bias->data_ptr<float>() : nullptr;
  a.out = out.data_ptr(), a.on = out.stride(0), a.oc = out.stride(1), a.oy = out.stride(2), a.ox = out.stride(3);
  a.res_scale = 1.f, a.shuffle = 1;
  return a;
}

// x in fp32 or bf16; out in the dtype of x, or (``any_out``) in fp32 or bf16.
void check_input(const at::Tensor& x, const at::Tensor& out, int64_t k, bool any_out = false) {
  const auto dt = x.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kBFloat16, "x: expected float32 or bfloat16, got ", dt);
  check_act(x, "x", dt);
  const auto odt = out.scalar_type();
  TORCH_CHECK_TYPE(any_out ? odt == at::kFloat || odt == at::kBFloat16 : odt == dt, "out: expected ",
                   any_out ? "float32 or bfloat16" : c10::toString(dt), ", got ", odt);
  check_act(out, "out", odt);
  TORCH_CHECK_VALUE(x.stride(1) == 1 || x.size(1) == 1, "x: expected channels-contiguous (channels_last) activations, got strides ", x.strides());
  TORCH_CHECK_VALUE(k == 1 || k == 3, "k: expected 1 or 3, got ", k);
}

// Rows [0, rows) in chunks (an even number of rows: the kernels pair rows) of at least ~0.25 M
// MACs, about four per thread so a late thread's share is taken by the others.
void parallel_rows(int64_t rows, int64_t row_macs, const std::function<void(int64_t, int64_t)>& body) {
  const int64_t least = std::max<int64_t>(1, (1 << 18) / std::max<int64_t>(1, row_macs));
  const int64_t quarter = (rows + 4 * at::get_num_threads() - 1) / (4 * at::get_num_threads());
  const int64_t chunk = (std::max(least, quarter) + 1) / 2 * 2;
  Pool::get().run(rows, chunk, body);
}

void conv2d(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& bias, int64_t k, int64_t cout,
            at::Tensor& out, const std::optional<at::Tensor>& residual, double res_scale, bool relu, int64_t shuffle,
            const std::optional<at::Tensor>& mean_out, const std::optional<at::Tensor>& pool, int64_t isa) {
  check_input(x, out, k, true);
  const auto dt = x.scalar_type();
  TORCH_CHECK_VALUE(shuffle >= 1 && cout % (shuffle * shuffle) == 0, "shuffle: expected r >= 1 dividing cout=", cout, " by r^2, got ", shuffle);
  const int64_t N = x.size(0), Cin = x.size(1), H = x.size(2), W = x.size(3), cs = cout / (shuffle * shuffle);
  check_weight(w, bias, dt, Cin, cout, k, "w", "bias");
  const std::vector<int64_t> oshape{N, cs, H * shuffle, W * shuffle};
  TORCH_CHECK_VALUE(out.sizes() == at::IntArrayRef(oshape), "out: expected shape ", at::IntArrayRef(oshape), ", got ", out.sizes());
  ConvArgs a = make_args(x, w, bias, k, cout, out);
  if (residual) {
    check_act(*residual, "residual", out.scalar_type());
    TORCH_CHECK_VALUE(residual->sizes() == out.sizes(), "residual: expected shape ", out.sizes(), ", got ", residual->sizes());
    a.res = residual->data_ptr(), a.rn = residual->stride(0), a.rc = residual->stride(1), a.ry = residual->stride(2), a.rx = residual->stride(3);
  }
  a.res_scale = (float)res_scale, a.relu = relu, a.shuffle = shuffle;
  if (mean_out) {
    TORCH_CHECK_VALUE(mean_out->scalar_type() == at::kFloat && mean_out->is_contiguous() && mean_out->numel() == cs,
                      "mean_out: expected a contiguous fp32 tensor of ", cs, " elements, got ", mean_out->sizes());
    a.mean_out = mean_out->data_ptr<float>();
  }
  float* pool_ptr = nullptr;
  if (pool) {
    TORCH_CHECK_VALUE(pool->scalar_type() == at::kFloat && pool->is_contiguous() && pool->numel() == N * cs,
                      "pool: expected a contiguous fp32 [N, C] tensor of ", N * cs, " elements, got ", pool->sizes());
    pool_ptr = pool->data_ptr<float>();
  }
  const RowsFn fn = pick(isa, dt == at::kBFloat16, out.scalar_type() == at::kBFloat16);
  std::mutex lock;
  parallel_rows(N * H, W * cout * Cin * k * k, [&](int64_t r0, int64_t r1) {
    std::vector<float> local(pool_ptr ? N * cs : 0, 0.f);
    fn(a, r0, r1, pool_ptr ? local.data() : nullptr);
    if (pool_ptr) {
      std::lock_guard<std::mutex> guard(lock);
      for (int64_t i = 0; i < N * cs; ++i) pool_ptr[i] += local[i];
    }
  });
}

// Rows per tile of the fused residual block: the private conv1 buffer ((rows + 2) x W x C) within
// ~768 KiB of L2, at most half a thread's share (two tiles per thread at least, for balance).
// Below 24 rows the recomputed halo (2 rows of conv1 per tile) costs more than the tiling saves.
int64_t tile_rows(int64_t N, int64_t H, int64_t W, int64_t C, int64_t esz) {
  const int64_t fit = (768 << 10) / std::max<int64_t>(1, W * C * esz) - 2;
  const int64_t share = (N * H + 2 * at::get_num_threads() - 1) / (2 * at::get_num_threads());
  if (fit < 24) return 0;  // too wide: the caller runs two passes
  return std::min<int64_t>({fit, H, std::max<int64_t>(8, share)});
}

void res_block(const at::Tensor& x, const at::Tensor& w1, const std::optional<at::Tensor>& b1, const at::Tensor& w2,
               const std::optional<at::Tensor>& b2, int64_t k, at::Tensor& out, double res_scale, bool relu_out, int64_t isa,
               int64_t tile) {
  check_input(x, out, k);
  const auto dt = x.scalar_type();
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3), esz = x.element_size();
  check_weight(w1, b1, dt, C, C, k, "w1", "b1");
  check_weight(w2, b2, dt, C, C, k, "w2", "b2");
  TORCH_CHECK_VALUE(out.sizes() == x.sizes(), "out: expected the shape of x ", x.sizes(), ", got ", out.sizes());
  const RowsFn fn = pick(isa, dt == at::kBFloat16, dt == at::kBFloat16);
  ConvArgs a2 = make_args(x, w2, b2, k, C, out);
  a2.res = x.data_ptr(), a2.rn = x.stride(0), a2.rc = 1, a2.ry = x.stride(2), a2.rx = x.stride(3);
  a2.res_scale = (float)res_scale, a2.relu = relu_out;
  TORCH_CHECK_VALUE(tile >= 0, "tile: expected 0 (auto) or rows per tile, got ", tile);
  TORCH_CHECK_VALUE(out.data_ptr() != x.data_ptr(), "out: must not alias x (other tiles still read it)");
  const int64_t p = k / 2;
  tile = tile ? std::min(tile, H) : tile_rows(N, H, W, C, esz);
  if (tile == 0 || (tile < 8 && H > tile)) {  // too wide to tile in L2: two passes through a full intermediate
    at::Tensor t = at::empty({N, C, H, W}, x.options().memory_format(at::MemoryFormat::ChannelsLast));
    ConvArgs a1 = make_args(x, w1, b1, k, C, t);
    a1.relu = 1;
    a2.x = t.data_ptr(), a2.xn = t.stride(0), a2.xy = t.stride(2), a2.xx = t.stride(3);
    parallel_rows(N * H, W * C * C * k * k, [&](int64_t r0, int64_t r1) { fn(a1, r0, r1, nullptr); });
    parallel_rows(N * H, W * C * C * k * k, [&](int64_t r0, int64_t r1) { fn(a2, r0, r1, nullptr); });
    return;
  }
  const int64_t tiles = (H + tile - 1) / tile;
  Pool::get().run(N * tiles, 1, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<char> buf;
    buf.resize((tile + 2 * p) * W * C * esz);
    for (int64_t ti = t0; ti < t1; ++ti) {
      const int64_t n = ti / tiles, y0 = ti % tiles * tile, y1 = std::min(H, y0 + tile);
      const int64_t ty0 = std::max<int64_t>(0, y0 - p), ty1 = std::min(H, y1 + p);
      // the buffer holds rows [ty0, ty1) of image n: row y at (y - ty0) * W * C
      const int64_t shift = (n * H + ty0) * W * C * esz;
      ConvArgs a1 = make_args(x, w1, b1, k, C, x);
      a1.relu = 1;
      a1.out = buf.data() - shift, a1.on = H * W * C, a1.oc = 1, a1.oy = W * C, a1.ox = C;
      fn(a1, n * H + ty0, n * H + ty1, nullptr);
      ConvArgs a = a2;
      a.x = buf.data() - shift, a.xn = H * W * C, a.xy = W * C, a.xx = C;
      fn(a, n * H + y0, n * H + y1, nullptr);
    }
  });
}

template <typename T>
void ca_apply_impl(const at::Tensor& x, const at::Tensor& r, const float* s, at::Tensor& out) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const T* xp = (const T*)x.data_ptr();
  const T* rp = (const T*)r.data_ptr();
  T* op = (T*)out.data_ptr();
  parallel_rows(N * H, W * C, [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t n = row / H, y = row % H;
      for (int64_t i = 0; i < W; ++i) {
        const T* xv = xp + n * x.stride(0) + y * x.stride(2) + i * x.stride(3);
        const T* rv = rp + n * r.stride(0) + y * r.stride(2) + i * r.stride(3);
        T* ov = op + n * out.stride(0) + y * out.stride(2) + i * out.stride(3);
        for (int64_t c = 0; c < C; ++c) ov[c] = (T)((float)xv[c] + (float)rv[c] * s[n * C + c]);
      }
    }
  });
}

// out = x + r * s, s = sigmoid(wu @ relu(wd @ (pool / HW) + bd) + bu) per image (fp32; rounded to
// the activation dtype before the product, as the eager addcmul does).
void ca_apply(const at::Tensor& x, const at::Tensor& r, const at::Tensor& pool, const at::Tensor& wd, const at::Tensor& bd,
              const at::Tensor& wu, const at::Tensor& bu, at::Tensor& out) {
  const auto dt = x.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kBFloat16, "x: expected float32 or bfloat16, got ", dt);
  check_act(x, "x", dt);
  check_act(r, "r", dt);
  check_act(out, "out", dt);
  TORCH_CHECK_VALUE(x.stride(1) == 1 && r.stride(1) == 1 && out.stride(1) == 1, "ca_apply: expected channels_last x, r and out");
  TORCH_CHECK_VALUE(r.sizes() == x.sizes() && out.sizes() == x.sizes(), "r, out: expected the shape of x ", x.sizes());
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3), Cr = wd.size(0);
  for (const auto* t : {&pool, &wd, &bd, &wu, &bu})
    TORCH_CHECK_TYPE(t->scalar_type() == at::kFloat && t->is_contiguous(), "ca_apply: expected contiguous fp32 attention tensors");
  TORCH_CHECK_VALUE(pool.numel() == N * C && wd.numel() == Cr * C && bd.numel() == Cr && wu.numel() == C * Cr && bu.numel() == C,
                    "ca_apply: pool [N, C], w_down [C_r, C], b_down [C_r], w_up [C, C_r], b_up [C] expected for N=", N, " C=", C);
  std::vector<float> s(N * C), hidden(Cr);
  const float *pp = pool.data_ptr<float>(), *wdp = wd.data_ptr<float>(), *bdp = bd.data_ptr<float>();
  const float *wup = wu.data_ptr<float>(), *bup = bu.data_ptr<float>();
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < Cr; ++j) {
      float acc = bdp[j];
      for (int64_t c = 0; c < C; ++c) acc += wdp[j * C + c] * (pp[n * C + c] / HW);
      hidden[j] = acc > 0.f ? acc : 0.f;
    }
    for (int64_t c = 0; c < C; ++c) {
      float acc = bup[c];
      for (int64_t j = 0; j < Cr; ++j) acc += wup[c * Cr + j] * hidden[j];
      const float sig = 1.f / (1.f + std::exp(-acc));
      s[n * C + c] = dt == at::kBFloat16 ? (float)(at::BFloat16)sig : sig;
    }
  }
  if (dt == at::kFloat)
    ca_apply_impl<float>(x, r, s.data(), out);
  else
    ca_apply_impl<at::BFloat16>(x, r, s.data(), out);
}

}  // namespace

TORCH_LIBRARY(csd_cpu, m) {
  m.def("conv2d(Tensor x, Tensor w, Tensor? bias, int k, int cout, Tensor(a!) out, Tensor? residual, float res_scale, "
        "bool relu, int shuffle, Tensor? mean_out, Tensor(b!)? pool, int isa) -> ()");
  m.def("res_block(Tensor x, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2, int k, Tensor(a!) out, float res_scale, "
        "bool relu_out, int isa, int tile) -> ()");
  m.def("ca_apply(Tensor x, Tensor r, Tensor pool, Tensor w_down, Tensor b_down, Tensor w_up, Tensor b_up, Tensor(a!) out) -> ()");
  m.def("best_isa(bool bf16) -> int", &best_isa);
}

TORCH_LIBRARY_IMPL(csd_cpu, CPU, m) {
  m.impl("conv2d", &conv2d);
  m.impl("res_block", &res_block);
  m.impl("ca_apply", &ca_apply);
}

}  // namespace csd_cpu
