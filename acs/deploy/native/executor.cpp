// Fused per-sample kernels of the DenseNet executor (acs/deploy/dynamic.py), registered as the
// operators torch.ops.acs.dense_layer (one dense layer with its ACS gate), torch.ops.acs.dense_block
// (a block of them in one call), torch.ops.acs.transition and torch.ops.acs.head (the classifier).
//
// At batch 1 a gated layer is a few dozen small tensor operations (gathers of the live rows of the
// weights, BN-ReLU, the dead-channel fold, GEMM, col2im, the summary update), and their per-call
// overhead costs more than their arithmetic. Here each layer, its ACS gate included, is one call,
// and so is each transition (torch.ops.acs.transition): the gathers, BN-ReLU, the fold, im2col and
// col2im are plain loops, and only the GEMMs go to BLAS. They execute the same multiply-accumulates
// as the tensor-operation path; acs/deploy/native/__init__.py registers their FLOP formulas so
// that torch.utils.flop_counter counts them.
#include <ATen/ATen.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <deque>
#include <optional>
#include <tuple>
#include <vector>

// The elementwise loops (BN-ReLU, col2im, im2col) are compiled twice on x86-64, for AVX2 and for
// the baseline, and the loader picks per CPU: the build may be cached in a home folder that
// machines of other CPU generations share, where -march=native would crash.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ACS_VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ACS_VECTOR_CLONES
#endif

namespace {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

// The entries of a long index tensor, or 0..count-1 where there is none.
std::vector<int64_t> indices(const OptTensor& index, int64_t count) {
  std::vector<int64_t> out;
  if (!index.has_value()) {
    out.resize(count);
    for (int64_t i = 0; i < count; ++i) out[i] = i;
    return out;
  }
  Tensor t = index->contiguous();
  TORCH_CHECK(t.scalar_type() == at::kLong, "index tensors must be int64");
  const int64_t* p = t.data_ptr<int64_t>();
  out.assign(p, p + t.numel());
  return out;
}

// The BLAS that PyTorch links (MKL or OpenBLAS export the Fortran symbol): weak, so that the
// kernels still load against a PyTorch that exports none, and run through ATen there.
extern "C" void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                       const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                       const float* beta, float* c, const int* ldc) __attribute__((weak));

// Row-major c (m × n) = a (m × k) · b (k × n) + beta · c, beta 0 or 1; a_transposed: a is stored
// as its transpose (k × m). BLAS is called directly, on the caller's memory: ATen's tensor views,
// checks and dispatch per call would cost as much as these small GEMMs. (Row-major c is
// column-major cᵀ = bᵀ · aᵀ.)
void gemm(int64_t m, int64_t n, int64_t k, const float* a, bool a_transposed, const float* b, float beta, float* c) {
  if (sgemm_ != nullptr) {
    const int mi = static_cast<int>(m), ni = static_cast<int>(n), ki = static_cast<int>(k);
    const int lda = a_transposed ? mi : ki;
    const float one = 1.0f;
    sgemm_("N", a_transposed ? "T" : "N", &ni, &mi, &ki, &one, b, &ni, a, &lda, &beta, c, &ni);
    return;
  }
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  float* pa = const_cast<float*>(a);  // read only: the views below are inputs
  const Tensor ta = a_transposed ? at::from_blob(pa, {k, m}, opts).t() : at::from_blob(pa, {m, k}, opts);
  const Tensor tb = at::from_blob(const_cast<float*>(b), {k, n}, opts);
  Tensor tc = at::from_blob(c, {m, n}, opts);
  if (beta == 0.0f)
    at::cpu::mm_out(tc, ta, tb);
  else
    at::cpu::addmm_out(tc, tc, ta, tb);
}

// Per-thread working memory, reused from call to call: fresh GEMM buffers of this size come from
// mmap, and their page faults would cost more than the GEMMs. Slots are never used by two
// buffers that are alive at once.
float* scratch(int slot, int64_t size) {
  thread_local std::vector<float> buffers[6];
  std::vector<float>& buffer = buffers[slot];
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

ACS_VECTOR_CLONES void relu(float* x, int64_t size) {
  for (int64_t i = 0; i < size; ++i) x[i] = std::max(x[i], 0.0f);
}

void check_float(const Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kFloat && t.is_contiguous() && t.device().is_cpu(), name,
              " must be a contiguous float32 CPU tensor");
}

// out[i] = relu(x[i]·scale[c_i] + shift[c_i]) for rows x[i] of channel c_i = channel[i].
ACS_VECTOR_CLONES void bn_relu(const float* x, int64_t rows, int64_t hw, const float* scale,
                               const float* shift, const std::vector<int64_t>& channel, float* out) {
  for (int64_t i = 0; i < rows; ++i) {
    const float a = scale[channel[i]], b = shift[channel[i]];
    const float* src = x + i * hw;
    float* dst = out + i * hw;
    for (int64_t p = 0; p < hw; ++p) dst[p] = std::max(src[p] * a + b, 0.0f);
  }
}

// col2im of one output channel of a stride-1, zero-padded 3×3 conv: z holds its 9 GEMM rows
// (H·W each, flipped kernel positions as kn2row_weight orders them); row t adds to the pixels its
// kernel position reaches inside the image, plus constant[t] there (the dead inputs' fold).
ACS_VECTOR_CLONES void shifted_sum(const float* z, const float* constant, int64_t height, int64_t width,
                                   float* out) {
  std::fill(out, out + height * width, 0.0f);
  for (int64_t ki = 0; ki < 3; ++ki) {
    for (int64_t kj = 0; kj < 3; ++kj) {
      const float* row = z + (ki * 3 + kj) * height * width;
      const float c = constant ? constant[ki * 3 + kj] : 0.0f;
      const int64_t dy = 1 - ki, dx = 1 - kj;  // output (y, x) reads GEMM column (y + dy, x + dx)
      const int64_t y0 = std::max<int64_t>(0, -dy), y1 = std::min(height, height - dy);
      const int64_t x0 = std::max<int64_t>(0, -dx), x1 = std::min(width, width - dx);
      for (int64_t y = y0; y < y1; ++y) {
        const float* src = row + (y + dy) * width + dx;
        float* dst = out + y * width;
        for (int64_t x = x0; x < x1; ++x) dst[x] += src[x] + c;
      }
    }
  }
}

// What a gate reads of its input (its `reads`): these mirror SUMMARY_INPUT, SUMMARY_SUBSAMPLED,
// SUMMARY_MEAN and SUMMARY_ABSMEAN of acs/gates/base.py, and must change with them.
constexpr int64_t kSummaryInput = 0;       // the input itself: no summary kept
constexpr int64_t kSummarySubsampled = 1;  // every other pixel
constexpr int64_t kSummaryMean = 2;        // the global mean
constexpr int64_t kSummaryAbsMean = 3;     // the global mean of absolute values

// What the gates read (reads, any but kSummaryInput) of one channel x (H·W), written to out.
void summarize(const float* x, int64_t reads, int64_t height, int64_t width, float* out) {
  const int64_t hw = height * width;
  if (reads == kSummarySubsampled) {
    const int64_t cols = (width + 1) / 2;
    for (int64_t y = 0; y < height; y += 2)
      for (int64_t j = 0; j < width; j += 2) out[(y / 2) * cols + j / 2] = x[y * width + j];
    return;
  }
  float sum = 0.0f;
  for (int64_t p = 0; p < hw; ++p) sum += reads == kSummaryMean ? x[p] : std::abs(x[p]);  // else kSummaryAbsMean
  out[0] = sum / static_cast<float>(hw);
}

struct AcsGate;  // the ACS gate's buffers, when the layer runs its gate itself (defined below)
int64_t acs_gate_keep(const AcsGate& gate, const float* xs, int64_t n, int64_t rows, int64_t cols,
                      const std::vector<int64_t>& channel, bool* keep);

// One dense layer of one sample, appended in place: reads the n live channels in feat's first
// rows (channel c live where alive[c], for c < offset, the layer's input channels; the skipped
// ones are folded as constants), decides which outputs it keeps (its ACS gate, when gate is given;
// else keep, or all), writes that decision to alive[offset:], computes the kept outputs and
// writes them to feat[n:] (times factor, if any) and what the gates read of them to summary[n:].
// The 3×3 conv is "dense" (w2: inputs × growth × 9, every input feeds every output; table: what a
// dead input adds per output and kernel position, summed in the pass that gathers the live inputs'
// weight rows) or, with in_idx, "stacked" (each output with
// its own group's inputs: in_idx growth × P, w2 growth × 9 × P). An optional bottleneck (w1
// inputs × B with BN folded in, b1, c1 the dead inputs' fold) sits before it. Returns (live
// channels after the layer, MACs executed, the gate's included).
std::tuple<int64_t, int64_t> dense_layer_impl(Tensor& feat, Tensor& summary, Tensor& alive, int64_t n, int64_t offset,
                                              int64_t reads, int64_t height, int64_t width, const OptTensor& keep,
                                              const OptTensor& factor, const Tensor& bn, const OptTensor& w1,
                                              const OptTensor& b1, const OptTensor& c1, const Tensor& w2,
                                              const OptTensor& table, const OptTensor& in_idx, const AcsGate* gate) {
  check_float(feat, "feat");
  check_float(bn, "bn");
  check_float(w2, "w2");
  TORCH_CHECK(reads >= kSummaryInput && reads <= kSummaryAbsMean, "unknown gate summary ", reads);
  const int64_t hw = height * width, growth = in_idx.has_value() ? w2.size(0) : w2.size(1);
  TORCH_CHECK(feat.dim() == 2 && feat.size(1) == hw, "feat must be channels × H·W");
  TORCH_CHECK(alive.scalar_type() == at::kBool && alive.is_contiguous() && alive.numel() >= offset + growth,
              "alive must be a contiguous bool mask of the block's channels");
  bool* liveness = alive.data_ptr<bool>();
  std::vector<int64_t> channel, skipped;
  channel.reserve(offset);
  for (int64_t c = 0; c < offset; ++c) (liveness[c] ? channel : skipped).push_back(c);
  TORCH_CHECK(static_cast<int64_t>(channel.size()) == n, "alive marks ", channel.size(), " live channels, feat holds ", n);
  int64_t macs = 0;
  bool* decision = liveness + offset;
  if (gate != nullptr) {
    TORCH_CHECK(reads == kSummarySubsampled, "the ACS gate reads the subsampled summary");
    check_float(summary, "summary");
    macs += acs_gate_keep(*gate, summary.data_ptr<float>(), n, (height + 1) / 2, (width + 1) / 2, channel, decision);
  } else if (keep.has_value()) {
    Tensor mask = keep->contiguous();
    TORCH_CHECK(mask.scalar_type() == at::kBool && mask.numel() == growth, "keep must be a bool mask of the outputs");
    std::memcpy(decision, mask.data_ptr<bool>(), growth * sizeof(bool));
  } else {
    std::fill(decision, decision + growth, true);
  }
  std::vector<int64_t> kept;
  for (int64_t o = 0; o < growth; ++o)
    if (decision[o]) kept.push_back(o);
  const int64_t k = static_cast<int64_t>(kept.size());
  TORCH_CHECK(n + k <= feat.size(0), "feat has no room for the layer's outputs");
  if (k == 0) return {n, macs};
  for (const OptTensor* t : {&w1, &b1, &c1, &table, &factor})
    if (t->has_value()) check_float(**t, "layer buffers");

  float* h = scratch(0, n * hw);
  bn_relu(feat.data_ptr<float>(), n, hw, bn.data_ptr<float>(), bn.data_ptr<float>() + bn.size(1), channel, h);
  int64_t inputs = n;  // rows of h: the live layer inputs (channel[i]) or, after a bottleneck, its outputs
  if (w1.has_value()) {  // the 1×1 bottleneck: live rows of w1, dead inputs as a bias
    const int64_t width1 = w1->size(1);
    float* rows = scratch(2, n * width1);
    for (int64_t i = 0; i < n; ++i)
      std::memcpy(rows + i * width1, w1->data_ptr<float>() + channel[i] * width1, width1 * sizeof(float));
    std::vector<float> bias(b1->data_ptr<float>(), b1->data_ptr<float>() + width1);
    for (int64_t d : skipped) {
      const float* c = c1->data_ptr<float>() + d * width1;
      for (int64_t j = 0; j < width1; ++j) bias[j] += c[j];
    }
    float* out = scratch(1, width1 * hw);
    for (int64_t j = 0; j < width1; ++j) std::fill(out + j * hw, out + (j + 1) * hw, bias[j]);
    gemm(width1, hw, n, rows, true, h, 1.0f, out);
    relu(out, width1 * hw);
    macs += n * width1 * hw;
    h = out;
    inputs = width1;
  }

  float* z = scratch(3, k * 9 * hw);  // each kept output's 9 GEMM rows
  std::vector<float> constant;  // (k, 9): the dead inputs' fold, dense conv on the layer input only
  const float* w = w2.data_ptr<float>();
  if (in_idx.has_value()) {
    TORCH_CHECK(in_idx->scalar_type() == at::kLong && in_idx->is_contiguous(), "in_idx must be contiguous int64");
    const int64_t per_out = in_idx->size(1);
    const int64_t* index = in_idx->data_ptr<int64_t>();
    float* group = scratch(4, per_out * hw);
    for (int64_t o = 0; o < k; ++o) {
      for (int64_t p = 0; p < per_out; ++p)
        std::memcpy(group + p * hw, h + index[kept[o] * per_out + p] * hw, hw * sizeof(float));
      gemm(9, hw, per_out, w + kept[o] * 9 * per_out, false, group, 0.0f, z + o * 9 * hw);
    }
    macs += k * 9 * per_out * hw;
  } else {
    float* rows = scratch(2, inputs * k * 9);  // transposed (k·9) × inputs weight of the GEMM
    if (w1.has_value()) {
      for (int64_t i = 0; i < inputs; ++i)
        for (int64_t o = 0; o < k; ++o)
          std::memcpy(rows + (i * k + o) * 9, w + (i * growth + kept[o]) * 9, 9 * sizeof(float));
    } else {  // one pass over the input channels in order: live ones' weight rows gathered, dead ones folded
      const bool fold = table.has_value() && !skipped.empty();
      if (fold) constant.assign(k * 9, 0.0f);
      for (int64_t c = 0, i = 0; c < offset; ++c) {
        if (liveness[c]) {
          const float* src = w + c * growth * 9;
          for (int64_t o = 0; o < k; ++o) std::memcpy(rows + (i * k + o) * 9, src + kept[o] * 9, 9 * sizeof(float));
          ++i;
        } else if (fold) {
          const float* t = table->data_ptr<float>() + c * growth * 9;
          for (int64_t o = 0; o < k; ++o)
            for (int64_t j = 0; j < 9; ++j) constant[o * 9 + j] += t[kept[o] * 9 + j];
        }
      }
    }
    gemm(k * 9, hw, inputs, rows, true, h, 0.0f, z);
    macs += inputs * k * 9 * hw;
  }

  float* out = feat.data_ptr<float>() + n * hw;
  const float* scale = factor.has_value() ? factor->data_ptr<float>() : nullptr;
  const int64_t per_summary = reads == kSummarySubsampled ? ((height + 1) / 2) * ((width + 1) / 2) : 1;
  float* gates_read = nullptr;
  if (reads != kSummaryInput) {
    check_float(summary, "summary");
    TORCH_CHECK(summary.numel() >= (n + k) * per_summary, "summary has no room for the layer's outputs");
    gates_read = summary.data_ptr<float>();
  }
  for (int64_t o = 0; o < k; ++o) {
    float* dst = out + o * hw;
    shifted_sum(z + o * 9 * hw, constant.empty() ? nullptr : constant.data() + o * 9, height, width, dst);
    if (scale) {
      const float s = scale[kept[o]];
      for (int64_t p = 0; p < hw; ++p) dst[p] *= s;
    }
    if (reads != kSummaryInput) summarize(dst, reads, height, width, gates_read + (n + o) * per_summary);
  }
  return {n + k, macs};
}

// C[r][c] (row pitch ldc) = init[r] (0 without init) + Σ_k a[k][r·stride] · b[k][c], for r < rows,
// c < cols, ReLU'd with relu: A given by its columns (a[k], entries stride apart), B by its rows
// (b[k]). The small products of the gates (a few dozen rows and pixels, a GEMM call per group)
// cost BLAS more in calls and packing than in arithmetic; here they are register tiles of up to
// R rows × 16 columns (two 8-float vectors), each output summed over k in order.
typedef float Vec8 __attribute__((vector_size(32), aligned(4)));  // GCC/Clang vectors: 1 AVX or 2 SSE registers

template <int64_t R>
inline __attribute__((always_inline)) void gemm_tile(const float* const* a, int64_t stride, const float* const* b,
                                                     int64_t depth, const float* init, int64_t r0, int64_t c0,
                                                     bool relu, float* c, int64_t ldc) {
  Vec8 acc[R][2];
  for (int64_t i = 0; i < R; ++i) acc[i][0] = acc[i][1] = Vec8{} + (init ? init[r0 + i] : 0.0f);
  for (int64_t k = 0; k < depth; ++k) {
    const float* ak = a[k] + r0 * stride;
    const Vec8 b0 = *reinterpret_cast<const Vec8*>(b[k] + c0), b1 = *reinterpret_cast<const Vec8*>(b[k] + c0 + 8);
    for (int64_t i = 0; i < R; ++i) {
      const float v = ak[i * stride];
      acc[i][0] += v * b0;
      acc[i][1] += v * b1;
    }
  }
  for (int64_t i = 0; i < R; ++i)
    for (int64_t h = 0; h < 2; ++h)
      *reinterpret_cast<Vec8*>(c + (r0 + i) * ldc + c0 + 8 * h) = relu ? (acc[i][h] > 0.0f ? acc[i][h] : 0.0f) : acc[i][h];
}

template <int64_t R>  // R: the most rows per tile, as many as the target's vector registers hold
inline __attribute__((always_inline)) void small_gemm_tiles(int64_t rows, int64_t cols, int64_t depth,
                                                            const float* const* a, int64_t stride,
                                                            const float* const* b, const float* init, bool relu,
                                                            float* c, int64_t ldc) {
  const int64_t full_cols = cols - cols % 16;
  for (int64_t r0 = 0; r0 < rows; r0 += R) {
    const int64_t rs = std::min(R, rows - r0);
    for (int64_t c0 = 0; c0 < full_cols; c0 += 16) {
      switch (rs) {  // the tile's row count as a constant: its accumulators stay in registers
        case 8: gemm_tile<R < 8 ? 1 : 8>(a, stride, b, depth, init, r0, c0, relu, c, ldc); break;
        case 7: gemm_tile<R < 7 ? 1 : 7>(a, stride, b, depth, init, r0, c0, relu, c, ldc); break;
        case 6: gemm_tile<R < 6 ? 1 : 6>(a, stride, b, depth, init, r0, c0, relu, c, ldc); break;
        case 5: gemm_tile<R < 5 ? 1 : 5>(a, stride, b, depth, init, r0, c0, relu, c, ldc); break;
        case 4: gemm_tile<4>(a, stride, b, depth, init, r0, c0, relu, c, ldc); break;
        case 3: gemm_tile<3>(a, stride, b, depth, init, r0, c0, relu, c, ldc); break;
        case 2: gemm_tile<2>(a, stride, b, depth, init, r0, c0, relu, c, ldc); break;
        default: gemm_tile<1>(a, stride, b, depth, init, r0, c0, relu, c, ldc);
      }
    }
    if (full_cols == cols) continue;
    const int64_t cs = cols - full_cols;  // the last, partial column tile: local sums (no aliasing)
    float acc[R][16];
    for (int64_t i = 0; i < rs; ++i)
      for (int64_t j = 0; j < cs; ++j) acc[i][j] = init ? init[r0 + i] : 0.0f;
    for (int64_t k = 0; k < depth; ++k) {
      const float* ak = a[k] + r0 * stride;
      const float* bk = b[k] + full_cols;
      for (int64_t i = 0; i < rs; ++i) {
        const float v = ak[i * stride];
        for (int64_t j = 0; j < cs; ++j) acc[i][j] += v * bk[j];
      }
    }
    for (int64_t i = 0; i < rs; ++i)
      for (int64_t j = 0; j < cs; ++j) c[(r0 + i) * ldc + full_cols + j] = relu ? std::max(acc[i][j], 0.0f) : acc[i][j];
  }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// Dispatched by hand rather than by target_clones: the tile height differs with the register count.
__attribute__((target("avx512f,avx512vl,avx2,fma"))) void small_gemm_avx512(int64_t rows, int64_t cols, int64_t depth,
                                                                            const float* const* a, int64_t stride,
                                                                            const float* const* b, const float* init,
                                                                            bool relu, float* c, int64_t ldc) {
  small_gemm_tiles<8>(rows, cols, depth, a, stride, b, init, relu, c, ldc);
}
__attribute__((target("avx2,fma"))) void small_gemm_avx2(int64_t rows, int64_t cols, int64_t depth,
                                                         const float* const* a, int64_t stride, const float* const* b,
                                                         const float* init, bool relu, float* c, int64_t ldc) {
  small_gemm_tiles<4>(rows, cols, depth, a, stride, b, init, relu, c, ldc);
}
#endif

void small_gemm(int64_t rows, int64_t cols, int64_t depth, const float* const* a, int64_t stride,
                const float* const* b, const float* init, bool relu, float* c, int64_t ldc) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  static const int level = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl")   ? 2
                           : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1
                                                                                               : 0;
  if (level == 2) return small_gemm_avx512(rows, cols, depth, a, stride, b, init, relu, c, ldc);
  if (level == 1) return small_gemm_avx2(rows, cols, depth, a, stride, b, init, relu, c, ldc);
#endif
  small_gemm_tiles<4>(rows, cols, depth, a, stride, b, init, relu, c, ldc);
}

// out[r·ldc + q] = init[r] (0 without) + a[r] · b[q] (dot products of length depth: a's rows, depth
// apart; b's rows, ldb apart), ReLU'd with relu: the products with fewer columns than a register
// tile (the gates' convs on the smallest maps), summed across vector lanes.
inline __attribute__((always_inline)) void dot_rows_body(int64_t rows, int64_t cols, int64_t depth, const float* a,
                                                         const float* b, int64_t ldb, const float* init, bool relu,
                                                         float* out, int64_t ldc) {
  const int64_t full = depth - depth % 8;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t q = 0; q < cols; ++q) {
      const float *x = a + r * depth, *y = b + q * ldb;
      Vec8 acc{};
      for (int64_t k = 0; k < full; k += 8)
        acc += *reinterpret_cast<const Vec8*>(x + k) * *reinterpret_cast<const Vec8*>(y + k);
      float sum = init ? init[r] : 0.0f;
      for (int64_t j = 0; j < 8; ++j) sum += acc[j];
      for (int64_t k = full; k < depth; ++k) sum += x[k] * y[k];
      out[r * ldc + q] = relu ? std::max(sum, 0.0f) : sum;
    }
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target("avx2,fma"))) void dot_rows_avx2(int64_t rows, int64_t cols, int64_t depth, const float* a,
                                                       const float* b, int64_t ldb, const float* init, bool relu,
                                                       float* out, int64_t ldc) {
  dot_rows_body(rows, cols, depth, a, b, ldb, init, relu, out, ldc);
}
#endif

void dot_rows(int64_t rows, int64_t cols, int64_t depth, const float* a, const float* b, int64_t ldb,
              const float* init, bool relu, float* out, int64_t ldc) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  static const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx2) return dot_rows_avx2(rows, cols, depth, a, b, ldb, init, relu, out, ldc);
#endif
  dot_rows_body(rows, cols, depth, a, b, ldb, init, relu, out, ldc);
}

// Where each entry of a k×k conv's patches comes from, for a single-channel plane of height ×
// width stored with one zero after it (at index height·width): (kernel row, kernel column,
// output pixel) → index into that plane, the zero for taps in the padding. Computed once per
// geometry and thread.
const std::vector<int32_t>& patch_index(int64_t height, int64_t width, int64_t kernel, int64_t stride,
                                        int64_t padding) {
  // A deque: adding a plan keeps the references to the others valid.
  thread_local std::deque<std::pair<std::array<int64_t, 5>, std::vector<int32_t>>> plans;
  const std::array<int64_t, 5> key{height, width, kernel, stride, padding};
  for (const auto& plan : plans)
    if (plan.first == key) return plan.second;
  const int64_t out_h = (height + 2 * padding - kernel) / stride + 1;
  const int64_t out_w = (width + 2 * padding - kernel) / stride + 1;
  std::vector<int32_t> index;
  index.reserve(kernel * kernel * out_h * out_w);
  for (int64_t ki = 0; ki < kernel; ++ki)
    for (int64_t kj = 0; kj < kernel; ++kj)
      for (int64_t oy = 0; oy < out_h; ++oy)
        for (int64_t ox = 0; ox < out_w; ++ox) {
          const int64_t y = oy * stride - padding + ki, x = ox * stride - padding + kj;
          const bool inside = y >= 0 && y < height && x >= 0 && x < width;
          index.push_back(static_cast<int32_t>(inside ? y * width + x : height * width));
        }
  plans.emplace_back(key, std::move(index));
  return plans.back().second;
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target("avx2"))) void gather_avx2(const float* plane, const int32_t* from, int64_t size, float* dst) {
  int64_t e = 0;
  for (; e + 8 <= size; e += 8)  // the compilers' cost models rarely choose the gather instruction themselves
    _mm256_storeu_ps(dst + e, _mm256_i32gather_ps(plane, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(from + e)), 4));
  for (; e < size; ++e) dst[e] = plane[from[e]];
}
#endif

// dst[e] = plane[index[e]]: a conv's patches of one channel.
void gather(const float* plane, const std::vector<int32_t>& index, float* dst) {
  const int32_t* from = index.data();
  const int64_t size = static_cast<int64_t>(index.size());
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  static const bool avx2 = __builtin_cpu_supports("avx2");
  if (avx2) return gather_avx2(plane, from, size, dst);
#endif
  for (int64_t e = 0; e < size; ++e) dst[e] = plane[from[e]];
}

// A grouped k×k conv of small planes: src holds `channels` planes (height × width, each followed
// by a zero: pitch height·width + 1); patch channel c reads plane order[c] (a permutation between
// two groupings; identity without). weight (groups, per_out, per_in·k·k), init (per output) or
// none. Writes out (channels_out rows, pitch out_pitch), ReLU'd with relu. Returns the output size.
std::pair<int64_t, int64_t> small_conv(const float* src, int64_t channels, int64_t height, int64_t width,
                                       const Tensor& weight, const float* init, int64_t kernel, int64_t stride,
                                       int64_t padding, const OptTensor& order, bool relu, float* patches,
                                       float* out, int64_t out_pitch) {
  const int64_t out_h = (height + 2 * padding - kernel) / stride + 1;
  const int64_t out_w = (width + 2 * padding - kernel) / stride + 1;
  const int64_t pixels = out_h * out_w, taps = kernel * kernel, pitch = height * width + 1;
  const std::vector<int32_t>& index = patch_index(height, width, kernel, stride, padding);
  const std::vector<int64_t> source = indices(order, channels);
  const int64_t groups = weight.size(0), per_out = weight.size(1), depth = weight.size(2);
  const float* w = weight.data_ptr<float>();
  if (pixels < 16) {  // too few for a register tile: patches pixel-major, one dot product per output
    const int64_t row = channels * taps;
    for (int64_t c = 0; c < channels; ++c) {
      const float* plane = src + source[c] * pitch;
      for (int64_t t = 0; t < taps; ++t)
        for (int64_t q = 0; q < pixels; ++q) patches[q * row + c * taps + t] = plane[index[t * pixels + q]];
    }
    for (int64_t g = 0; g < groups; ++g)
      dot_rows(per_out, pixels, depth, w + g * per_out * depth, patches + g * depth, row,
               init ? init + g * per_out : nullptr, relu, out + g * per_out * out_pitch, out_pitch);
    return {out_h, out_w};
  }
  for (int64_t c = 0; c < channels; ++c) gather(src + source[c] * pitch, index, patches + c * taps * pixels);
  std::vector<const float*> a(depth), b(depth);
  for (int64_t g = 0; g < groups; ++g) {
    const float* wg = w + g * per_out * depth;
    for (int64_t k = 0; k < depth; ++k) {
      a[k] = wg + k;
      b[k] = patches + (g * depth + k) * pixels;
    }
    small_gemm(per_out, pixels, depth, a.data(), depth, b.data(), init ? init + g * per_out : nullptr, relu,
               out + g * per_out * out_pitch, out_pitch);
  }
  return {out_h, out_w};
}

// The buffers of one ACS gate (acs.deploy.gates.ACSGateExec): 1×1 reduce (input-major), grouped
// 3×3 conv_a with BN folded in (wa, ba), the permutation mid between the groupings, grouped 3×3
// conv_b, linear head (wh, bh); (kernel, stride, padding) of conv_a and conv_b.
struct AcsGate {
  Tensor reduce, wa, ba, wb, wh, bh;
  OptTensor mid;
  int64_t ka, sa, pa, kb, sb, pb;
};

// The ACS gate of one sample: 1×1 reduce of the live summary rows xs (n × rows·cols, channel[i]
// in row i), conv_a and ReLU, conv_b, global pool, head; keep where sigmoid > 0.5, written to
// keep. Returns the MACs executed.
int64_t acs_gate_keep(const AcsGate& gate, const float* xs, int64_t n, int64_t rows, int64_t cols,
                      const std::vector<int64_t>& channel, bool* keep) {
  const Tensor &reduce = gate.reduce, &wa = gate.wa, &wb = gate.wb, &wh = gate.wh, &bh = gate.bh;
  const int64_t width = reduce.size(1), outputs = wh.size(0), pixels = rows * cols;
  // 1×1 reduce over the live rows of the input-major weight: BLAS on their copy where the map is
  // large (measured faster from 64 pixels), else straight from the rows. Each output plane is
  // followed by a zero, which the convs' patches read in the padding.
  std::vector<const float*> a(n), b(n);
  for (int64_t i = 0; i < n; ++i) {
    a[i] = reduce.data_ptr<float>() + channel[i] * width;
    b[i] = xs + i * pixels;
  }
  float* h = scratch(1, width * (pixels + 1));
  if (pixels >= 64) {
    float* w = scratch(0, n * width);  // (slots 0 and 5 are free until conv_b)
    for (int64_t i = 0; i < n; ++i) std::memcpy(w + i * width, a[i], width * sizeof(float));
    float* t = scratch(5, width * pixels);
    gemm(width, pixels, n, w, true, xs, 0.0f, t);
    for (int64_t c = 0; c < width; ++c) std::memcpy(h + c * (pixels + 1), t + c * pixels, pixels * sizeof(float));
  } else {
    small_gemm(width, pixels, n, a.data(), 1, b.data(), nullptr, false, h, pixels + 1);
  }
  for (int64_t c = 0; c < width; ++c) h[c * (pixels + 1) + pixels] = 0.0f;
  int64_t macs = n * width * pixels;
  // conv_a (BN folded in: its bias ba) and ReLU
  const int64_t ha = (rows + 2 * gate.pa - gate.ka) / gate.sa + 1, wa_ = (cols + 2 * gate.pa - gate.ka) / gate.sa + 1;
  float* conv_a = scratch(3, width * (ha * wa_ + 1));
  small_conv(h, width, rows, cols, wa, gate.ba.data_ptr<float>(), gate.ka, gate.sa, gate.pa, std::nullopt, true,
             scratch(2, width * gate.ka * gate.ka * ha * wa_), conv_a, ha * wa_ + 1);
  for (int64_t c = 0; c < width; ++c) conv_a[c * (ha * wa_ + 1) + ha * wa_] = 0.0f;
  macs += wa.numel() * ha * wa_;
  // conv_b, reading conv_a's outputs in its own grouping's order (mid)
  const int64_t hb = (ha + 2 * gate.pb - gate.kb) / gate.sb + 1, wb_ = (wa_ + 2 * gate.pb - gate.kb) / gate.sb + 1;
  float* hp = scratch(5, width * hb * wb_);
  small_conv(conv_a, width, ha, wa_, wb, nullptr, gate.kb, gate.sb, gate.pb, gate.mid, false,
             scratch(4, width * gate.kb * gate.kb * hb * wb_), hp, hb * wb_);
  macs += wb.numel() * hb * wb_ + wh.numel();
  // Global pool, head and threshold on a few dozen numbers: loops, not tensor calls.
  std::vector<float> pooled(width, 0.0f);
  for (int64_t c = 0; c < width; ++c) {
    for (int64_t p = 0; p < hb * wb_; ++p) pooled[c] += hp[c * hb * wb_ + p];
    pooled[c] /= static_cast<float>(hb * wb_);
  }
  const float* head = wh.data_ptr<float>();
  for (int64_t j = 0; j < outputs; ++j) {
    float z = bh.data_ptr<float>()[j];
    for (int64_t c = 0; c < width; ++c) z += head[j * width + c] * pooled[c];
    keep[j] = 1.0f / (1.0f + std::exp(-z)) > 0.5f;  // the model's sigmoid > 0.5, not z > 0
  }
  return macs;
}

// The registered operator: dense_layer_impl, its ACS gate given as (reduce, wa, ba, mid, wb, wh,
// bh) and gate_convs (ka, sa, pa, kb, sb, pb), or without gate (reduce None).
std::tuple<int64_t, int64_t> dense_layer(Tensor feat, Tensor summary, Tensor alive, int64_t n, int64_t offset,
                                         int64_t reads, int64_t height, int64_t width, const OptTensor& keep,
                                         const OptTensor& factor, const Tensor& bn, const OptTensor& w1,
                                         const OptTensor& b1, const OptTensor& c1, const Tensor& w2,
                                         const OptTensor& table, const OptTensor& in_idx, const OptTensor& reduce,
                                         const OptTensor& wa, const OptTensor& ba, const OptTensor& mid,
                                         const OptTensor& wb, const OptTensor& wh, const OptTensor& bh,
                                         at::IntArrayRef gate_convs) {
  if (!reduce.has_value())
    return dense_layer_impl(feat, summary, alive, n, offset, reads, height, width, keep, factor, bn, w1, b1, c1, w2,
                            table, in_idx, nullptr);
  TORCH_CHECK(wa.has_value() && ba.has_value() && wb.has_value() && wh.has_value() && bh.has_value() &&
                  gate_convs.size() == 6,
              "an ACS gate needs reduce, wa, ba, wb, wh, bh and the geometry of its two convs");
  const AcsGate gate{*reduce, *wa, *ba, *wb, *wh, *bh, mid, gate_convs[0], gate_convs[1], gate_convs[2],
                     gate_convs[3], gate_convs[4], gate_convs[5]};
  for (const Tensor* t : {&gate.reduce, &gate.wa, &gate.ba, &gate.wb, &gate.wh, &gate.bh}) check_float(*t, "gate buffers");
  return dense_layer_impl(feat, summary, alive, n, offset, reads, height, width, keep, factor, bn, w1, b1, c1, w2,
                          table, in_idx, &gate);
}

// Buffers per layer in dense_block's list, in this order (acs/deploy/dynamic.py builds it).
constexpr int64_t kLayerBuffers = 14;

// A whole dense block of one sample, one call instead of one per layer (whose dispatch and
// TorchScript overhead costs about as much as a gated layer's arithmetic at batch 1): the block
// input x (n × H·W, every channel live), then each layer as dense_layer with its ACS gate (or
// none), its buffers in `buffers` (kLayerBuffers per layer: bn, w1, b1, c1, w2, table, in_idx,
// reduce, wa, ba, mid, wb, wh, bh) and its input channel count in in_channels. reads: what the
// gates read (kSummaryInput: no gate). Returns the live channels (n' × H·W), the liveness of all
// `channels` of the block, and the MACs executed.
std::tuple<Tensor, Tensor, int64_t> dense_block(const Tensor& x, int64_t height, int64_t width, int64_t reads,
                                                int64_t channels, at::IntArrayRef in_channels,
                                                const c10::List<std::optional<Tensor>>& buffers,
                                                at::IntArrayRef gate_convs) {
  check_float(x, "x");
  const int64_t layers = static_cast<int64_t>(in_channels.size()), hw = height * width;
  TORCH_CHECK(static_cast<int64_t>(buffers.size()) == layers * kLayerBuffers, "dense_block expects ", kLayerBuffers,
              " buffers per layer");
  TORCH_CHECK(x.dim() == 2 && x.size(1) == hw && x.size(0) <= channels, "x must be channels × H·W");
  int64_t n = x.size(0);
  Tensor feat = at::empty({channels, hw}, x.options());
  std::memcpy(feat.data_ptr<float>(), x.data_ptr<float>(), n * hw * sizeof(float));
  Tensor summary = feat;  // not read without gates
  if (reads != kSummaryInput) {
    const int64_t per = reads == kSummarySubsampled ? ((height + 1) / 2) * ((width + 1) / 2) : 1;
    summary = at::empty({channels, per}, x.options());
    for (int64_t c = 0; c < n; ++c)
      summarize(x.data_ptr<float>() + c * hw, reads, height, width, summary.data_ptr<float>() + c * per);
  }
  Tensor alive = at::ones({channels}, x.options().dtype(at::kBool));
  int64_t macs = 0;
  std::vector<OptTensor> b(kLayerBuffers);
  for (int64_t l = 0; l < layers; ++l) {
    for (int64_t j = 0; j < kLayerBuffers; ++j) b[j] = buffers.get(l * kLayerBuffers + j);
    TORCH_CHECK(b[0].has_value() && b[4].has_value(), "dense_block: a layer without bn or w2");
    const auto [live, m] = dense_layer(feat, summary, alive, n, in_channels[l], reads, height, width, std::nullopt,
                                       std::nullopt, *b[0], b[1], b[2], b[3], *b[4], b[5], b[6], b[7], b[8], b[9],
                                       b[10], b[11], b[12], b[13], gate_convs);
    n = live;
    macs += m;
  }
  return {feat.narrow(0, 0, n), alive, macs};
}

// The live input channels (where alive[c]; all of them without alive) and the dead ones of a layer
// with `channels` inputs, checked against the n live channels its x holds.
std::pair<std::vector<int64_t>, std::vector<int64_t>> live_and_dead(const OptTensor& alive, int64_t channels,
                                                                    int64_t n, const char* what) {
  std::vector<int64_t> live, dead;
  if (alive.has_value()) {
    TORCH_CHECK(alive->scalar_type() == at::kBool && alive->is_contiguous() && alive->numel() == channels,
                "alive must be a contiguous bool mask of ", what);
    const bool* liveness = alive->data_ptr<bool>();
    for (int64_t c = 0; c < channels; ++c) (liveness[c] ? live : dead).push_back(c);
  } else {
    live = indices(std::nullopt, channels);
  }
  TORCH_CHECK(static_cast<int64_t>(live.size()) == n, "alive marks ", live.size(), " live channels, x holds ", n);
  return {live, dead};
}

// A transition of one sample: BN-ReLU of the n live channels x (n × H·W; channel c live where
// alive[c], all without alive), the 1×1 conv as one GEMM over their weight rows (weight: channels ×
// outputs, input-major) with the dead channels' constant added as a bias (dead_bias: channels ×
// outputs), then, with pool, 2×2 average pooling (even H and W). Returns (outputs × H'·W', MACs).
std::tuple<Tensor, int64_t> transition(const Tensor& x, int64_t height, int64_t width, const OptTensor& alive,
                                       const Tensor& bn, const Tensor& weight, const Tensor& dead_bias, bool pool) {
  for (const Tensor* t : {&x, &bn, &weight, &dead_bias}) check_float(*t, "transition operands");
  const int64_t channels = weight.size(0), outputs = weight.size(1), hw = height * width, n = x.size(0);
  TORCH_CHECK(x.dim() == 2 && x.size(1) == hw, "x must be channels × H·W");
  TORCH_CHECK(!pool || (height % 2 == 0 && width % 2 == 0), "2×2 pooling needs even H and W");
  const auto [channel, skipped] = live_and_dead(alive, channels, n, "the transition's inputs");
  float* h = scratch(0, n * hw);
  bn_relu(x.data_ptr<float>(), n, hw, bn.data_ptr<float>(), bn.data_ptr<float>() + bn.size(1), channel, h);
  const float* w = weight.data_ptr<float>();
  float* rows = scratch(2, n * outputs);
  for (int64_t i = 0; i < n; ++i) std::memcpy(rows + i * outputs, w + channel[i] * outputs, outputs * sizeof(float));
  std::vector<float> bias(outputs, 0.0f);
  const float* folds = dead_bias.data_ptr<float>();
  for (int64_t d : skipped)
    for (int64_t o = 0; o < outputs; ++o) bias[o] += folds[d * outputs + o];
  float* conv = scratch(1, outputs * hw);
  for (int64_t o = 0; o < outputs; ++o) std::fill(conv + o * hw, conv + (o + 1) * hw, bias[o]);
  gemm(outputs, hw, n, rows, true, h, 1.0f, conv);
  const int64_t out_h = pool ? height / 2 : height, out_w = pool ? width / 2 : width;
  Tensor out = at::empty({outputs, out_h, out_w}, x.options());
  float* dst = out.data_ptr<float>();
  if (!pool) {
    std::memcpy(dst, conv, outputs * hw * sizeof(float));
  } else {
    for (int64_t o = 0; o < outputs; ++o)
      for (int64_t y = 0; y < out_h; ++y) {
        const float* top = conv + o * hw + 2 * y * width;
        const float* bottom = top + width;
        float* row = dst + (o * out_h + y) * out_w;
        for (int64_t j = 0; j < out_w; ++j)
          row[j] = ((top[2 * j] + bottom[2 * j]) + (top[2 * j + 1] + bottom[2 * j + 1])) * 0.25f;
      }
  }
  return {out, n * outputs * hw};
}

// The classifier of one sample: BN-ReLU of the n live channels x (n × H·W; channel c live where
// alive[c], all without alive), global average pool, linear layer over their weight rows
// (weight: channels × classes, input-major) with the dead channels' constant added to the bias
// (dead_bias: channels × classes). Returns (1 × classes logits, MACs).
std::tuple<Tensor, int64_t> head(const Tensor& x, const OptTensor& alive, const Tensor& bn, const Tensor& weight,
                                 const Tensor& bias, const Tensor& dead_bias) {
  for (const Tensor* t : {&x, &bn, &weight, &bias, &dead_bias}) check_float(*t, "head operands");
  const int64_t channels = weight.size(0), classes = weight.size(1), n = x.size(0), hw = x.size(1);
  const auto [channel, skipped] = live_and_dead(alive, channels, n, "the head's inputs");
  Tensor out = at::empty({1, classes}, x.options());
  float* logits = out.data_ptr<float>();
  std::memcpy(logits, bias.data_ptr<float>(), classes * sizeof(float));
  const float* folds = dead_bias.data_ptr<float>();
  for (int64_t d : skipped)
    for (int64_t j = 0; j < classes; ++j) logits[j] += folds[d * classes + j];
  const float *scale = bn.data_ptr<float>(), *shift = scale + bn.size(1), *w = weight.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    const float* row = x.data_ptr<float>() + i * hw;
    const float a = scale[channel[i]], b = shift[channel[i]];
    float sum = 0.0f;
    for (int64_t p = 0; p < hw; ++p) sum += std::max(row[p] * a + b, 0.0f);
    const float pooled = sum / static_cast<float>(hw);
    for (int64_t j = 0; j < classes; ++j) logits[j] += pooled * w[channel[i] * classes + j];
  }
  return {out, n * classes};
}

}  // namespace

TORCH_LIBRARY(acs, m) {
  m.def(
      "dense_layer(Tensor(a!) feat, Tensor(b!) summary, Tensor(c!) alive, int n, int offset, int reads, int height, "
      "int width, Tensor? keep, Tensor? factor, Tensor bn, Tensor? w1, Tensor? b1, Tensor? c1, Tensor w2, "
      "Tensor? table, Tensor? in_idx, Tensor? reduce, Tensor? wa, Tensor? ba, Tensor? mid, Tensor? wb, Tensor? wh, "
      "Tensor? bh, int[] gate_convs) -> (int, int)");
  m.def(
      "dense_block(Tensor x, int height, int width, int reads, int channels, int[] in_channels, Tensor?[] buffers, "
      "int[] gate_convs) -> (Tensor, Tensor, int)");
  m.def(
      "transition(Tensor x, int height, int width, Tensor? alive, Tensor bn, Tensor weight, Tensor dead_bias, "
      "bool pool) -> (Tensor, int)");
  m.def("head(Tensor x, Tensor? alive, Tensor bn, Tensor weight, Tensor bias, Tensor dead_bias) -> (Tensor, int)");
}

TORCH_LIBRARY_IMPL(acs, CPU, m) {
  m.impl("dense_layer", &dense_layer);
  m.impl("dense_block", &dense_block);
  m.impl("transition", &transition);
  m.impl("head", &head);
}
