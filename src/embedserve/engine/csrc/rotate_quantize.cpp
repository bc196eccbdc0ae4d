// Int8Linear's input side in one pass per row: Hadamard rotation (HadamardRotation's T x), outlier gather,
// smoothing and per-row uint8 quantisation (_quantize_rows_shifted_), with the row held in an L1-sized buffer.
// engine/fused.py JIT-compiles this with -O3 -march=native; AVX-512 where the compiler targets it, scalar elsewhere.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

namespace {

constexpr float kQmax = 127.0f;
constexpr float kMinAmax = 1e-8f;  // _quantize_rows_shifted_'s clamp: a row of zeros gets scale 1e-8 / 127
constexpr int32_t kZeroPoint = 128;

struct Plan {
  int64_t n, blocks, width, n_outliers;
  float scale, clip;
  const float* signs;     // (n,) +-1 or null
  const float* dense;     // (blocks, blocks), already divided by sqrt(blocks), or null
  const int64_t* outliers;  // (n_outliers,) channel indices
  const float* factor;    // (n,) smoothing factors (0 at outliers) or null
};

// One radix-2 stage of the Walsh-Hadamard butterfly on a block of width p: contiguous halves, so it vectorises.
void stage2(float* y, int64_t p, int64_t h) {
  for (int64_t i = 0; i < p; i += 2 * h) {
    float* __restrict a = y + i;
    float* __restrict b = y + i + h;
    for (int64_t j = 0; j < h; ++j) {
      const float u = a[j], v = b[j];
      a[j] = u + v;
      b[j] = u - v;
    }
  }
}

// Stages h and 2h in one sweep: the same adds in the same order as two stage2 calls, half the loads and stores.
void stage4(float* y, int64_t p, int64_t h) {
  for (int64_t i = 0; i < p; i += 4 * h) {
    float* __restrict a = y + i;
    float* __restrict b = a + h;
    float* __restrict c = b + h;
    float* __restrict d = c + h;
    for (int64_t j = 0; j < h; ++j) {
      const float ab = a[j] + b[j], amb = a[j] - b[j], cd = c[j] + d[j], cmd = c[j] - d[j];
      a[j] = ab + cd;
      b[j] = amb + cmd;
      c[j] = ab - cd;
      d[j] = amb - cmd;
    }
  }
}

#ifdef __AVX512F__
// The first four stages (h = 1, 2, 4, 8) inside one 16-float register: partner lanes by permute, then
// v * (+1 | -1) + partner gives a + b in the lower and a - b in the upper lane, exactly (the product is exact).
inline __m512 wht16(__m512 v) {
  const __m512 s1 = _mm512_setr_ps(1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, -1);
  const __m512 s2 = _mm512_setr_ps(1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1, 1, 1, -1, -1);
  const __m512 s4 = _mm512_setr_ps(1, 1, 1, 1, -1, -1, -1, -1, 1, 1, 1, 1, -1, -1, -1, -1);
  const __m512 s8 = _mm512_setr_ps(1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1, -1);
  v = _mm512_fmadd_ps(v, s1, _mm512_permute_ps(v, 0xB1));
  v = _mm512_fmadd_ps(v, s2, _mm512_permute_ps(v, 0x4E));
  v = _mm512_fmadd_ps(v, s4, _mm512_shuffle_f32x4(v, v, 0xB1));
  return _mm512_fmadd_ps(v, s8, _mm512_shuffle_f32x4(v, v, 0x4E));
}
#endif

// y = signs * x with the butterfly stages that fit one register applied; returns the first stage not yet applied.
// `next` (the following row, or null) is prefetched a cache line per 16 floats, so it arrives while this row's
// remaining passes run from L1 (the hardware prefetcher sees a short burst per row and does not run ahead).
int64_t load_signed(const Plan& P, const float* x, float* y, const float* next) {
  int64_t i = 0;
#ifdef __AVX512F__
  if (P.width >= 16) {
    for (; i < P.n; i += 16) {
      if (next) _mm_prefetch(reinterpret_cast<const char*>(next + i), _MM_HINT_T0);
      __m512 v = _mm512_loadu_ps(x + i);
      if (P.signs) v = _mm512_mul_ps(v, _mm512_loadu_ps(P.signs + i));
      _mm512_storeu_ps(y + i, wht16(v));
    }
    return 16;
  }
#endif
  for (; i < P.n; ++i) y[i] = P.signs ? x[i] * P.signs[i] : x[i];
  return 1;
}

void hadamard(const Plan& P, const float* x, float* y, const float* next) {
  if (P.width == 1 && !P.signs) {  // no rotation (a smoothed layer): a plain copy, not n one-wide blocks
    std::copy(x, x + P.n, y);
    return;
  }
  const int64_t first = load_signed(P, x, y, next);
  for (int64_t b = 0; b < P.blocks; ++b) {
    float* block = y + b * P.width;
    int64_t h = first;
    for (; 4 * h <= P.width; h *= 4) stage4(block, P.width, h);
    if (h < P.width) stage2(block, P.width, h);
  }
}

// out = dense @ (y viewed as blocks x width): H_m across the blocks, as HadamardRotation's last matmul.
void mix_blocks(const Plan& P, const float* y, float* out) {
  const int64_t m = P.blocks, p = P.width;
  for (int64_t i = 0; i < m; ++i) {
    float* __restrict o = out + i * p;
    std::fill(o, o + p, 0.0f);
    for (int64_t k = 0; k < m; ++k) {
      const float w = P.dense[i * m + k];
      const float* __restrict src = y + k * p;
      for (int64_t j = 0; j < p; ++j) o[j] += w * src[j];
    }
  }
}

// v = v * post * factor in place (the two roundings of the torch path), returning max |v|.
float smooth_amax(const Plan& P, float* v, float post) {
  int64_t i = 0;
  float amax = 0.0f;
#ifdef __AVX512F__
  const __m512 vpost = _mm512_set1_ps(post);
  __m512 vmax = _mm512_setzero_ps();
  for (; i + 16 <= P.n; i += 16) {
    __m512 t = _mm512_mul_ps(_mm512_loadu_ps(v + i), vpost);
    if (P.factor) t = _mm512_mul_ps(t, _mm512_loadu_ps(P.factor + i));
    _mm512_storeu_ps(v + i, t);
    vmax = _mm512_max_ps(vmax, _mm512_abs_ps(t));
  }
  amax = _mm512_reduce_max_ps(vmax);
#endif
  for (; i < P.n; ++i) {
    float t = v[i] * post;
    if (P.factor) t *= P.factor[i];
    v[i] = t;
    amax = std::max(amax, std::fabs(t));
  }
  return amax;
}

// q = round(v * 127 / amax) + 128 (half to even, as torch.round), clamped to +-127 first when clip < 1.
void quantize(const Plan& P, const float* v, float inv, uint8_t* q) {
  const bool clamp = P.clip != 1.0f;
  int64_t i = 0;
#ifdef __AVX512F__
  const __m512 vinv = _mm512_set1_ps(inv), lo = _mm512_set1_ps(-kQmax), hi = _mm512_set1_ps(kQmax);
  const __m512i zp = _mm512_set1_epi32(kZeroPoint);
  for (; i + 16 <= P.n; i += 16) {
    __m512 t = _mm512_mul_ps(_mm512_loadu_ps(v + i), vinv);
    if (clamp) t = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
    const __m512i r = _mm512_add_epi32(_mm512_cvtps_epi32(t), zp);  // MXCSR default: round to nearest even
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), _mm512_cvtepi32_epi8(r));
  }
#endif
  for (; i < P.n; ++i) {
    float t = v[i] * inv;
    if (clamp) t = std::min(std::max(t, -kQmax), kQmax);
    q[i] = static_cast<uint8_t>(static_cast<int32_t>(std::nearbyint(t)) + kZeroPoint);
  }
}

void row(const Plan& P, const float* x, const float* next, float* buf, float* mixed, uint8_t* q, float* scale,
         float* cols) {
  hadamard(P, x, buf, next);
  float* v = buf;
  float post = P.scale;
  if (P.dense) {
    for (int64_t i = 0; i < P.n; ++i) buf[i] *= P.scale;
    mix_blocks(P, buf, mixed);
    v = mixed;
    post = 1.0f;
  }
  for (int64_t k = 0; k < P.n_outliers; ++k) cols[k] = v[P.outliers[k]] * post;  // rotated, not smoothed
  float amax = std::max(smooth_amax(P, v, post), kMinAmax);
  if (P.clip != 1.0f) amax *= P.clip;
  quantize(P, v, kQmax / amax, q);
  *scale = amax / kQmax;
}

const float* f32_or_null(const std::optional<at::Tensor>& t, int64_t numel, const char* what) {
  if (!t.has_value()) return nullptr;
  TORCH_CHECK(t->scalar_type() == at::kFloat && t->is_contiguous() && t->numel() == numel, what,
              ": expected a contiguous float32 tensor of ", numel, " elements");
  return t->data_ptr<float>();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>> rotate_quantize(
    const at::Tensor& x, const std::optional<at::Tensor>& signs, int64_t blocks, int64_t width, double scale,
    const std::optional<at::Tensor>& dense, const std::optional<at::Tensor>& outliers,
    const std::optional<at::Tensor>& act_factor, double clip) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == at::kFloat && x.is_contiguous(), "x: contiguous 2-D float32");
  TORCH_CHECK(width >= 1 && (width & (width - 1)) == 0, "width must be a power of two, got ", width);
  TORCH_CHECK(blocks * width == x.size(1), "blocks * width != row width");
  const int64_t rows = x.size(0), n = x.size(1);
  Plan P{n, blocks, width, 0, static_cast<float>(scale), static_cast<float>(clip), nullptr, nullptr, nullptr,
         nullptr};
  P.signs = f32_or_null(signs, n, "signs");
  P.dense = f32_or_null(dense, blocks * blocks, "dense");
  P.factor = f32_or_null(act_factor, n, "act_factor");
  at::Tensor q = at::empty({rows, n}, x.options().dtype(at::kByte));
  at::Tensor scales = at::empty({rows, 1}, x.options());
  std::optional<at::Tensor> cols;
  if (outliers.has_value()) {
    TORCH_CHECK(outliers->scalar_type() == at::kLong && outliers->dim() == 1 && outliers->is_contiguous(),
                "outliers: contiguous 1-D int64");
    P.n_outliers = outliers->numel();
    P.outliers = outliers->data_ptr<int64_t>();
    for (int64_t k = 0; k < P.n_outliers; ++k)
      TORCH_CHECK(P.outliers[k] >= 0 && P.outliers[k] < n, "outlier index out of range");
    cols = at::empty({rows, P.n_outliers}, x.options());
  }
  const float* xs = x.data_ptr<float>();
  uint8_t* qs = q.data_ptr<uint8_t>();
  float* ss = scales.data_ptr<float>();
  float* cs = cols.has_value() ? cols->data_ptr<float>() : nullptr;
  const int64_t grain = std::max<int64_t>(1, 32768 / n);  // a few rows per task: small batches stay on one thread
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> buf(n), mixed(P.dense ? n : 0);
    for (int64_t r = begin; r < end; ++r)
      row(P, xs + r * n, r + 1 < end ? xs + (r + 1) * n : nullptr, buf.data(), mixed.data(), qs + r * n, ss + r,
          cs ? cs + r * P.n_outliers : nullptr);
  });
  return {q, scales, cols};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("rotate_quantize", &rotate_quantize, "Hadamard rotation, outlier gather, smoothing and uint8 quantisation");
}
