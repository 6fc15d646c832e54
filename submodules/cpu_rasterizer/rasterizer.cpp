// CPU tile rasterizer for 3D Gaussian splatting with the Inria rasterizer's semantics.
//
// Compiled on first use by gaussian_renderer/native.py (torch.utils.cpp_extension.load) and registered as
// torch.ops.gs_cpu_rasterizer.*. Only minimal ATen headers are included (a build takes seconds, not the
// ~30 s of torch/extension.h). The per-Gaussian stage (projection, SH colours) is in projection.cpp and sh.cpp;
// this file does tile binning, front-to-back compositing, the back-to-front backward and the alpha*T vote.
//
// Semantics per pixel (Inria's renderCUDA): pixel (i, j) is evaluated at the float point (i, j) in the frame
// of means2d; Gaussians in (tile, depth) order; power = -0.5 (a dx^2 + c dy^2) - b dx dy (skip power > 0);
// alpha = min(0.99, o exp(power)) (skip alpha < 1/255); stop before a Gaussian that would bring T below 1e-4.
// The backward passes the 0.99 clamp straight through (d alpha / d(o G) = 1 even when clamped), like Inria.
//
// Determinism: every output element is produced by exactly one thread in a fixed order. Per-Gaussian
// gradients (and votes) are first written as one row per (tile, Gaussian) intersection, then summed per
// Gaussian in intersection order. No atomics, so results are bit-identical for any thread count.
//
// Speed: within a tile the loop is Gaussian-outer / pixel-inner over the pixels of the Gaussian's
// "alpha >= 1/255" ellipse bounding box (a conservative superset: every skipped pixel provably has
// alpha < 1/255, so results equal an evaluation of all 256 tile pixels), 8 pixels at a time with GCC vector
// extensions (AVX2 with -march=native: ~4x faster than the same code as SSE pairs). A chunk none of whose lanes
// can contribute (exponent below the alpha >= 1/255 bound, pixel already terminated, or behind the pixel's last
// contributor in the backward) is skipped before its exp; the colour / vote sums are accumulated in the same
// visit, so skipped chunks cost one comparison (1.1x forward, 1.2x backward measured). exp is a polynomial
// (Cephes expf, ~1 ulp); forward, backward and vote evaluate pixels with the same function, so the skip
// decisions of the three passes agree bit for bit.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common.h"

#include <omp.h>
#ifdef __AVX__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

namespace {

constexpr int kTile = 16;
constexpr int kTilePix = kTile * kTile;
constexpr float kMinAlpha = 1.0f / 255.0f;
constexpr float kMaxAlpha = 0.99f;
constexpr float kMinT = 1e-4f;
constexpr int kPrefetch = 4;  // intersections ahead whose Gaussian data is prefetched

using at::Tensor;

using gs_cpu::resolve_threads;

// 8-lane vectors (GCC vector extensions: SSE pairs by default, AVX with -mavx2). Every pixel-level quantity is
// computed with the same vector code in forward, backward and vote, so their skip decisions agree bit for bit.
typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));
constexpr int kLanes = 8;

static inline vf8 splat(float v) { return vf8{} + v; }
static inline vi8 splati(int32_t v) { return vi8{} + v; }
static inline vf8 loadf(const float* p) {
  vf8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
static inline vi8 loadi(const int32_t* p) {
  vi8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
static inline void storef(float* p, vf8 v) { std::memcpy(p, &v, sizeof(v)); }
static inline void storei(int32_t* p, vi8 v) { std::memcpy(p, &v, sizeof(v)); }
static inline float hsum(vf8 v) {  // fixed order
  float s = 0.0f;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}
static inline bool any_lane(vi8 m) {  // true if any lane of the mask is set
#ifdef __AVX__
  const __m256i v = (__m256i)m;
  return !_mm256_testz_si256(v, v);
#else
  uint64_t u[4];
  std::memcpy(u, &m, sizeof(u));
  return (u[0] | u[1] | u[2] | u[3]) != 0;
#endif
}
static const vf8 kLaneF = {0, 1, 2, 3, 4, 5, 6, 7};
static const vi8 kLaneI = {0, 1, 2, 3, 4, 5, 6, 7};

// exp for x <= 0: Cephes expf polynomial with Cody-Waite reduction (~1 ulp), branch-free.
static inline vf8 vexp(vf8 x) {
  x = x < -87.0f ? splat(-87.0f) : x;
  const vf8 t = x * 1.44269504088896341f;
  const vf8 n = (t + 12582912.0f) - 12582912.0f;  // round to nearest
  vf8 r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf8 p = splat(1.9875691500e-4f);
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const vi8 bits = (__builtin_convertvector(n, vi8) + 127) << 23;
  return p * (vf8)bits;  // GCC vector cast: reinterprets the bits
}

// alpha = min(0.99, o G) and the validity mask shared by all passes (power <= 0, alpha >= 1/255).
struct PixelEval {
  vf8 dx, G, alpha;
  vi8 ok;
};

// Per-Gaussian data used by the tile loops, contiguous.
struct Packed {
  float mx, my;   // mean in pixel frame
  float a, b, c;  // conic
  float o;        // opacity
  float ex, ey;   // half extents of the alpha >= 1/255 ellipse (pixels, with margin); ex < 0: never visible
  float lpow;     // power < lpow implies alpha < 1/255: lets a chunk be skipped before its exp (see eval)
};

void pack_gaussians(const float* means2d, const float* conics, const float* opac, int64_t n, int nt,
                    std::vector<Packed>& out) {
  out.resize(n);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    Packed p;
    p.mx = means2d[2 * i];
    p.my = means2d[2 * i + 1];
    p.a = conics[3 * i];
    p.b = conics[3 * i + 1];
    p.c = conics[3 * i + 2];
    p.o = opac[i];
    // alpha >= 1/255 needs o exp(power) >= 1/255, i.e. q = a dx^2 + 2 b dx dy + c dy^2 <= 2 ln(255 o).
    // The ellipse q <= r2 spans |dx| <= sqrt(r2 * Sxx), Sxx = c / (ac - b^2) (the inverse conic).
    const double o = p.o;
    const double det = static_cast<double>(p.a) * p.c - static_cast<double>(p.b) * p.b;
    // o exp(power) >= 1/255 needs power >= -ln(255 o); 1e-3 below that, o exp(power) < 0.999 / 255 whatever the
    // ~1 ulp error of vexp and of the product, so lanes under lpow are provably invalid.
    p.lpow = o > 0.0 ? static_cast<float>(-std::log(255.0 * o) - 1e-3) : 1e30f;
    if (!(o * 1.001 >= 1.0 / 255.0)) {
      p.ex = p.ey = -1.0f;  // alpha = o * G <= o < 1/255 everywhere (also catches NaN)
    } else if (!(det > 0.0) || !(p.a > 0.0f) || !(p.c > 0.0f)) {
      p.ex = p.ey = 1e30f;  // degenerate conic: evaluate the whole tile
    } else {
      const double r2 = 2.0 * std::max(std::log(255.0 * o), 0.0) + 1e-3;
      p.ex = static_cast<float>(std::sqrt(r2 * p.c / det) * 1.001 + 0.5);
      p.ey = static_cast<float>(std::sqrt(r2 * p.a / det) * 1.001 + 0.5);
    }
    out[i] = p;
  }
}

// Pixel range [lo, hi] (tile-local, inclusive) touched by a Gaussian's ellipse box; false if empty.
static inline bool clip_range(float m, float e, int origin, int size, int& lo, int& hi) {
  const float flo = std::ceil(m - e) - static_cast<float>(origin);
  const float fhi = std::floor(m + e) - static_cast<float>(origin);
  if (!(fhi >= 0.0f) || !(flo <= static_cast<float>(size - 1))) return false;
  lo = flo < 0.0f ? 0 : static_cast<int>(flo);
  hi = fhi > static_cast<float>(size - 1) ? size - 1 : static_cast<int>(fhi);
  return lo <= hi;
}

struct TileGrid {
  int width, height, gx, gy;
  TileGrid(int64_t w, int64_t h)
      : width(static_cast<int>(w)), height(static_cast<int>(h)),
        gx(static_cast<int>((w + kTile - 1) / kTile)), gy(static_cast<int>((h + kTile - 1) / kTile)) {}
  int64_t count() const { return static_cast<int64_t>(gx) * gy; }
};

void check_f32(const Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == at::kFloat, name, " must be float32");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dims");
}

// ------------------------------------------------------------------------------------------------------------
// Binning: Inria's getRect, then a stable (tile, depth) order. Ties in depth keep the Gaussian index order.
// ------------------------------------------------------------------------------------------------------------
std::tuple<Tensor, Tensor, Tensor> bin_gaussians(const Tensor& means2d, const Tensor& radii, const Tensor& depths,
                                                 int64_t width, int64_t height, int64_t num_threads) {
  check_f32(means2d, "means2d", 2);
  check_f32(depths, "depths", 1);
  TORCH_CHECK(radii.scalar_type() == at::kInt && radii.is_contiguous() && radii.device().is_cpu(),
              "radii must be a contiguous CPU int32 tensor");
  const int64_t n = means2d.size(0);
  TORCH_CHECK(means2d.size(1) == 2 && radii.numel() == n && depths.numel() == n, "bin: inconsistent shapes");
  TORCH_CHECK(width > 0 && height > 0, "bin: empty image");
  const int nt = resolve_threads(num_threads);
  const TileGrid grid(width, height);
  const float* m = means2d.data_ptr<float>();
  const int32_t* rad = radii.data_ptr<int32_t>();
  const float* dep = depths.data_ptr<float>();

  Tensor touched = at::empty({n}, radii.options());
  int32_t* tch = touched.data_ptr<int32_t>();
  std::vector<int32_t> rect(4 * n);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    int32_t x0 = 0, y0 = 0, x1 = 0, y1 = 0;
    const float r = static_cast<float>(rad[i]);
    const float px = m[2 * i], py = m[2 * i + 1];
    if (rad[i] > 0 && std::isfinite(px) && std::isfinite(py) && std::isfinite(dep[i])) {
      // (int) truncation after clamping to [0, grid] equals Inria's min(grid, max(0, (int)v)).
      auto cl = [](float v, int g) {
        v = v < 0.0f ? 0.0f : v;
        v = v > static_cast<float>(g) ? static_cast<float>(g) : v;
        return static_cast<int32_t>(v);
      };
      x0 = cl((px - r) / kTile, grid.gx);
      y0 = cl((py - r) / kTile, grid.gy);
      x1 = cl((px + r + kTile - 1) / kTile, grid.gx);
      y1 = cl((py + r + kTile - 1) / kTile, grid.gy);
    }
    const int32_t cnt = (x1 - x0) * (y1 - y0);
    tch[i] = cnt > 0 ? cnt : 0;
    rect[4 * i] = x0;
    rect[4 * i + 1] = y0;
    rect[4 * i + 2] = x1;
    rect[4 * i + 3] = y1;
  }

  // Stable LSD radix sort of the visible Gaussians by depth (positive floats sort like their bit patterns;
  // negative depths cannot occur after the near cull, but are mapped monotonically anyway).
  std::vector<int32_t> order;
  order.reserve(n);
  for (int64_t i = 0; i < n; ++i)
    if (tch[i] > 0) order.push_back(static_cast<int32_t>(i));
  const int64_t nv = static_cast<int64_t>(order.size());
  {
    std::vector<uint32_t> keys(nv), keys2(nv);
    std::vector<int32_t> order2(nv);
    for (int64_t i = 0; i < nv; ++i) {
      uint32_t u;
      std::memcpy(&u, &dep[order[i]], 4);
      keys[i] = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    }
    constexpr int kBits = 11;
    constexpr int kBuckets = 1 << kBits;
    std::vector<int64_t> hist(kBuckets);
    for (int shift = 0; shift < 32; shift += kBits) {
      std::fill(hist.begin(), hist.end(), 0);
      for (int64_t i = 0; i < nv; ++i) hist[(keys[i] >> shift) & (kBuckets - 1)]++;
      int64_t s = 0;
      for (int b = 0; b < kBuckets; ++b) {
        const int64_t c = hist[b];
        hist[b] = s;
        s += c;
      }
      for (int64_t i = 0; i < nv; ++i) {
        const int64_t dst = hist[(keys[i] >> shift) & (kBuckets - 1)]++;
        keys2[dst] = keys[i];
        order2[dst] = order[i];
      }
      keys.swap(keys2);
      order.swap(order2);
    }
  }

  // Per-chunk tile histograms -> offsets -> fill. Chunks are contiguous in depth order, so the result is the
  // same for any thread count.
  const int64_t ntiles = grid.count();
  const int nchunks = nt;
  std::vector<int64_t> counts(static_cast<size_t>(nchunks) * ntiles, 0);
  auto chunk_begin = [&](int c) { return nv * c / nchunks; };
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int c = 0; c < nchunks; ++c) {
    int64_t* cnt = counts.data() + static_cast<size_t>(c) * ntiles;
    for (int64_t q = chunk_begin(c); q < chunk_begin(c + 1); ++q) {
      const int32_t* rc = &rect[4 * static_cast<int64_t>(order[q])];
      for (int32_t y = rc[1]; y < rc[3]; ++y)
        for (int32_t x = rc[0]; x < rc[2]; ++x) cnt[static_cast<int64_t>(y) * grid.gx + x]++;
    }
  }
  Tensor offsets = at::empty({ntiles + 1}, means2d.options().dtype(at::kLong));
  int64_t* off = offsets.data_ptr<int64_t>();
  int64_t total = 0;
  for (int64_t t = 0; t < ntiles; ++t) {
    off[t] = total;
    for (int c = 0; c < nchunks; ++c) {
      const int64_t v = counts[static_cast<size_t>(c) * ntiles + t];
      counts[static_cast<size_t>(c) * ntiles + t] = total;
      total += v;
    }
  }
  off[ntiles] = total;
  TORCH_CHECK(total < (int64_t(1) << 31), "bin: too many tile intersections (", total, ")");
  Tensor gids = at::empty({total}, radii.options());
  int32_t* gid = gids.data_ptr<int32_t>();
#pragma omp parallel for num_threads(nt) schedule(static)
  for (int c = 0; c < nchunks; ++c) {
    int64_t* pos = counts.data() + static_cast<size_t>(c) * ntiles;
    for (int64_t q = chunk_begin(c); q < chunk_begin(c + 1); ++q) {
      const int32_t g = order[q];
      const int32_t* rc = &rect[4 * static_cast<int64_t>(g)];
      for (int32_t y = rc[1]; y < rc[3]; ++y)
        for (int32_t x = rc[0]; x < rc[2]; ++x) gid[pos[static_cast<int64_t>(y) * grid.gx + x]++] = g;
    }
  }
  return {offsets, gids, touched};
}

struct Bins {
  const int64_t* off;
  const int32_t* gid;
  int64_t total;
};

Bins check_bins(const Tensor& offsets, const Tensor& gids, const TileGrid& grid) {
  TORCH_CHECK(offsets.scalar_type() == at::kLong && offsets.is_contiguous() && offsets.numel() == grid.count() + 1,
              "tile_offsets must be int64 [num_tiles + 1]");
  TORCH_CHECK(gids.scalar_type() == at::kInt && gids.is_contiguous(), "isect_gids must be contiguous int32");
  const int64_t* off = offsets.data_ptr<int64_t>();
  TORCH_CHECK(off[grid.count()] == gids.numel(), "tile_offsets do not match isect_gids");
  return {off, gids.data_ptr<int32_t>(), gids.numel()};
}

// Sums the written per-intersection rows [M, D] (used[k] != 0; the others are uninitialised and count as zero)
// per Gaussian in intersection order (deterministic), and hands each Gaussian's sum [D] to emit(i, sum).
template <typename Emit>
void reduce_rows(const float* rows, int64_t d, const int32_t* gid, const uint8_t* used, int64_t total, int64_t n,
                 int nt, Emit&& emit) {
  std::vector<int64_t> start(n + 1, 0);
  for (int64_t k = 0; k < total; ++k)
    if (used[k]) start[gid[k] + 1]++;
  for (int64_t i = 0; i < n; ++i) start[i + 1] += start[i];
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  std::vector<int64_t> idx(static_cast<size_t>(start[n]));
  for (int64_t k = 0; k < total; ++k)
    if (used[k]) idx[fill[gid[k]]++] = k;
#pragma omp parallel num_threads(nt)
  {
    std::vector<float> o(static_cast<size_t>(d));
#pragma omp for schedule(static, 1024)
    for (int64_t i = 0; i < n; ++i) {
      std::fill(o.begin(), o.end(), 0.0f);
      for (int64_t q = start[i]; q < start[i + 1]; ++q) {
        const float* r = rows + idx[q] * d;
        for (int64_t j = 0; j < d; ++j) o[j] += r[j];
      }
      emit(i, o.data());
    }
  }
}

// One 8-pixel chunk of a row in two steps. chunk_power: dx and the exponent, plus `maybe`, the lanes that can
// be valid (power in [lpow, 0]); a chunk with no such lane is skipped before the exp, which changes no result.
// eval_finish: G = exp(power), alpha = min(0.99, o G), ok = power <= 0 & alpha >= 1/255 (ok implies maybe).
struct ChunkPower {
  vf8 dx, power;
  vi8 maybe;
};

static inline ChunkPower chunk_power(const Packed& p, float dy, float hc_dy2, float x0) {
  ChunkPower c;
  c.dx = p.mx - (x0 + kLaneF);
  c.power = ((-0.5f * p.a) * (c.dx * c.dx) + hc_dy2) - p.b * (c.dx * dy);
  c.maybe = (c.power <= splat(0.0f)) & (c.power >= splat(p.lpow));
  return c;
}

static inline PixelEval eval_finish(const Packed& p, const ChunkPower& c) {
  PixelEval e;
  e.dx = c.dx;
  const vf8 power = c.power;
  e.G = vexp(power);
  const vf8 og = p.o * e.G;
  e.alpha = og < kMaxAlpha ? og : splat(kMaxAlpha);
  e.ok = (power <= splat(0.0f)) & (e.alpha >= splat(kMinAlpha));
  return e;
}

// Pixel box of a Gaussian in a tile: rows [y_lo, y_hi], chunks xb = xb_lo, xb_lo + 8, ... <= x_hi, lanes
// outside [x_lo, x_hi] masked.
struct Box {
  int x_lo, x_hi, y_lo, y_hi, xb_lo;
};

static inline bool gaussian_box(const Packed& p, int tx0, int ty0, int tw, int th, Box& b) {
  if (p.ex < 0.0f) return false;
  if (!clip_range(p.mx, p.ex, tx0, tw, b.x_lo, b.x_hi) || !clip_range(p.my, p.ey, ty0, th, b.y_lo, b.y_hi))
    return false;
  b.xb_lo = b.x_lo & ~(kLanes - 1);
  return true;
}

static inline vi8 lane_mask(int xb, const Box& b) {
  const vi8 xi = xb + kLaneI;
  return (xi >= splati(b.x_lo)) & (xi <= splati(b.x_hi));
}

// The chunk loop shared by all passes: for each 8-pixel chunk of the Gaussian's box in the tile (row-major) it
// calls body(i, dy, cp, pre) when some lane is in the box, has an exponent in [lpow, 0] and is open(i) for the
// pass (forward / vote: pixel not terminated; backward: Gaussian before the pixel's last contributor). Skipped
// chunks have no lane that could contribute.
template <typename Open, typename Body>
static inline void visit_chunks(const Packed& p, const Box& b, int tx0, int ty0, Open&& open, Body&& body) {
  const float hc = -0.5f * p.c;
  for (int y = b.y_lo; y <= b.y_hi; ++y) {
    const float dy = p.my - static_cast<float>(ty0 + y);
    const float hc_dy2 = hc * (dy * dy);
    for (int xb = b.xb_lo; xb <= b.x_hi; xb += kLanes) {
      const int i = y * kTile + xb;
      const ChunkPower cp = chunk_power(p, dy, hc_dy2, static_cast<float>(tx0 + xb));
      const vi8 pre = lane_mask(xb, b) & cp.maybe & open(i);
      if (any_lane(pre)) body(i, dy, cp, pre);
    }
  }
}

// Front-to-back pass over one tile shared by forward and vote. For each intersection k (Gaussian g) that
// reaches the tile: on_begin(k, g), then on_chunk(i, w) for every chunk at tile offset i that has a lane which
// may contribute, w = alpha * T per lane (0 on the others), then on_end(k). Chunks that are not visited would
// have had w = 0 on every lane.
struct alignas(32) TileState {
  float T[kTilePix];
  int32_t done[kTilePix];
  int32_t last[kTilePix];
};

template <typename OnBegin, typename OnChunk, typename OnEnd>
void front_to_back(const Packed* pk, const Bins& bins, int64_t tile, const TileGrid& grid, TileState& st,
                   OnBegin&& on_begin, OnChunk&& on_chunk, OnEnd&& on_end) {
  const int tx0 = static_cast<int>(tile % grid.gx) * kTile;
  const int ty0 = static_cast<int>(tile / grid.gx) * kTile;
  const int tw = std::min(kTile, grid.width - tx0);
  const int th = std::min(kTile, grid.height - ty0);
  for (int i = 0; i < kTilePix; ++i) {
    st.T[i] = 1.0f;
    st.last[i] = 0;
    st.done[i] = 0;
  }
  int active = tw * th;
  const int64_t start = bins.off[tile], end = bins.off[tile + 1];
  for (int64_t k = start; k < end && active > 0; ++k) {
    if (k + kPrefetch < end) __builtin_prefetch(pk + bins.gid[k + kPrefetch]);  // random gather: hide the miss
    const int32_t g = bins.gid[k];
    const Packed p = pk[g];
    Box b;
    if (!gaussian_box(p, tx0, ty0, tw, th, b)) continue;
    const vi8 contributor = splati(static_cast<int32_t>(k - start + 1));
    vi8 nstop = splati(0);
    on_begin(k, g);
    visit_chunks(
        p, b, tx0, ty0, [&](int i) { return loadi(st.done + i) == splati(0); },
        [&](int i, float, const ChunkPower& cp, vi8 pre) {
          const PixelEval e = eval_finish(p, cp);
          const vi8 valid = pre & e.ok;
          const vf8 t = loadf(st.T + i);
          const vf8 test_t = t * (1.0f - e.alpha);
          const vi8 stop = valid & (test_t < splat(kMinT));
          const vi8 contrib = valid & ~stop;
          storef(st.T + i, contrib ? test_t : t);
          storei(st.done + i, loadi(st.done + i) | stop);
          storei(st.last + i, contrib ? contributor : loadi(st.last + i));
          nstop -= stop;  // stop lanes are -1
          on_chunk(i, contrib ? e.alpha * t : splat(0.0f));
        });
    on_end(k);
    for (int l = 0; l < kLanes; ++l) active -= nstop[l];
  }
}

// ------------------------------------------------------------------------------------------------------------
// Forward: out [C, H, W] = sum colour * alpha * T (no background), T_final [H, W], last [H, W] (1-based index
// of the last contributor within the tile list, 0 if none).
// ------------------------------------------------------------------------------------------------------------
std::tuple<Tensor, Tensor, Tensor> rasterize_forward(const Tensor& means2d, const Tensor& conics,
                                                     const Tensor& opacities, const Tensor& colors,
                                                     const Tensor& offsets, const Tensor& gids, int64_t width,
                                                     int64_t height, int64_t num_threads) {
  check_f32(means2d, "means2d", 2);
  check_f32(conics, "conics", 2);
  check_f32(opacities, "opacities", 1);
  check_f32(colors, "colors", 2);
  const int64_t n = means2d.size(0), nc = colors.size(1);
  TORCH_CHECK(conics.size(0) == n && opacities.numel() == n && colors.size(0) == n, "forward: inconsistent N");
  const TileGrid grid(width, height);
  const Bins bins = check_bins(offsets, gids, grid);
  const int nt = resolve_threads(num_threads);
  std::vector<Packed> pk;
  pack_gaussians(means2d.data_ptr<float>(), conics.data_ptr<float>(), opacities.data_ptr<float>(), n, nt, pk);
  const float* col = colors.data_ptr<float>();

  Tensor out = at::empty({nc, height, width}, colors.options());
  Tensor t_final = at::empty({height, width}, colors.options());
  Tensor last = at::empty({height, width}, gids.options());
  float* po = out.data_ptr<float>();
  float* pt = t_final.data_ptr<float>();
  int32_t* pl = last.data_ptr<int32_t>();
  const int64_t hw = height * width;

#pragma omp parallel num_threads(nt)
  {
    TileState st;
    std::vector<vf8> acc_v(static_cast<size_t>(nc) * kTilePix / kLanes);
    float* acc = reinterpret_cast<float*>(acc_v.data());
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < grid.count(); ++tile) {
      std::fill(acc, acc + nc * kTilePix, 0.0f);
      const float* c = nullptr;
      front_to_back(
          pk.data(), bins, tile, grid, st, [&](int64_t, int32_t g) { c = col + static_cast<int64_t>(g) * nc; },
          [&](int i, vf8 w) {
            for (int64_t ch = 0; ch < nc; ++ch) {
              float* a = acc + ch * kTilePix + i;
              storef(a, loadf(a) + w * c[ch]);
            }
          },
          [](int64_t) {});
      const int tx0 = static_cast<int>(tile % grid.gx) * kTile, ty0 = static_cast<int>(tile / grid.gx) * kTile;
      const int tw = std::min(kTile, grid.width - tx0), th = std::min(kTile, grid.height - ty0);
      for (int y = 0; y < th; ++y) {
        const int64_t row = static_cast<int64_t>(ty0 + y) * width + tx0;
        std::memcpy(pt + row, st.T + y * kTile, sizeof(float) * tw);
        std::memcpy(pl + row, st.last + y * kTile, sizeof(int32_t) * tw);
        for (int64_t ch = 0; ch < nc; ++ch)
          std::memcpy(po + ch * hw + row, acc + ch * kTilePix + y * kTile, sizeof(float) * tw);
      }
    }
  }
  return {out, t_final, last};
}

// Back-to-front state of one tile: T recovered so far, S = sum behind of (g . c) alpha T, K = T_final dL/dT_final,
// lst = last contributor per pixel.
struct alignas(32) BwdTile {
  float T[kTilePix], S[kTilePix], K[kTilePix];
  int32_t lst[kTilePix];
};

// One (tile, Gaussian) intersection of the backward: updates st on the Gaussian's chunks and writes its row r
// [6 + nc]. NC > 0 fixes the channel count at compile time (accumulators stay in registers; 3 = RGB, 4 = RGB +
// depth); NC = 0 takes nc at run time with the accumulators in a_col_dyn [nc].
template <int NC>
void backward_one(const Packed& p, const Box& b, int tx0, int ty0, int32_t jl, const float* c, int64_t nc_rt,
                  const float* g, BwdTile& st, vf8* a_col_dyn, float* r) {
  constexpr bool kFixed = NC > 0;
  const int64_t nc = kFixed ? NC : nc_rt;
  vf8 a_col_fixed[kFixed ? NC : 1];
  auto a_col = [&](int64_t ch) -> vf8& {
    if constexpr (kFixed)
      return a_col_fixed[ch];
    else
      return a_col_dyn[ch];
  };
  for (int64_t ch = 0; ch < nc; ++ch) a_col(ch) = splat(0.0f);
  const vi8 jlv = splati(jl);
  vf8 a_mx = splat(0.0f), a_my = a_mx, a_a = a_mx, a_b = a_mx, a_c = a_mx, a_o = a_mx;
  // Chunks that are not visited would add only zeros below.
  visit_chunks(
      p, b, tx0, ty0, [&](int i) { return jlv < loadi(st.lst + i); },
      [&](int i, float dy, const ChunkPower& cp, vi8 pre) {
        const PixelEval e = eval_finish(p, cp);
        const vi8 valid = pre & e.ok;
        vf8 gc = splat(0.0f);  // g . c
        for (int64_t ch = 0; ch < nc; ++ch) gc += loadf(g + ch * kTilePix + i) * c[ch];
        const vf8 one_m = 1.0f - e.alpha;
        const vf8 s_old = loadf(st.S + i), t_old = loadf(st.T + i);
        const vf8 t = t_old / one_m;
        const vf8 dl_dalpha = t * gc - (s_old + loadf(st.K + i)) / one_m;
        const vf8 wt = e.alpha * t;
        storef(st.S + i, valid ? s_old + gc * wt : s_old);
        storef(st.T + i, valid ? t : t_old);
        const vf8 w = valid ? wt : splat(0.0f);
        for (int64_t ch = 0; ch < nc; ++ch) a_col(ch) += w * loadf(g + ch * kTilePix + i);
        const vf8 dl_dop = valid ? e.G * dl_dalpha : splat(0.0f);  // clamp passed through
        const vf8 dl_dpow = dl_dop * p.o;                          // dL/dpower = dL/dG * G
        a_o += dl_dop;
        a_mx += dl_dpow * -(p.a * e.dx + p.b * dy);
        a_my += dl_dpow * -(p.c * dy + p.b * e.dx);
        a_a += dl_dpow * (-0.5f * (e.dx * e.dx));
        a_b += dl_dpow * -(e.dx * dy);
        a_c += dl_dpow * (-0.5f * (dy * dy));
      });
  r[0] = hsum(a_mx);
  r[1] = hsum(a_my);
  r[2] = hsum(a_a);
  r[3] = hsum(a_b);
  r[4] = hsum(a_c);
  r[5] = hsum(a_o);
  for (int64_t ch = 0; ch < nc; ++ch) r[6 + ch] = hsum(a_col(ch));
}

// ------------------------------------------------------------------------------------------------------------
// Backward (Inria's order: back to front from the last contributor, T recovered by division).
// For a pixel with upstream gradients g (colour) and gT (final transmittance):
//   dL/dalpha_j = T_j (g . c_j) - (S_j + T_final gT) / (1 - alpha_j),  S_j = sum_{i>j} (g . c_i) alpha_i T_i.
// d_out may hold fewer channels C' than colors (C): the trailing C - C' channels have no upstream gradient (the
// depth channel in training), are not read, and get exactly zero colour gradient.
// ------------------------------------------------------------------------------------------------------------
std::tuple<Tensor, Tensor, Tensor, Tensor> rasterize_backward(
    const Tensor& means2d, const Tensor& conics, const Tensor& opacities, const Tensor& colors,
    const Tensor& offsets, const Tensor& gids, const Tensor& t_final, const Tensor& last, const Tensor& d_out,
    const Tensor& d_t_final, int64_t num_threads) {
  check_f32(means2d, "means2d", 2);
  check_f32(conics, "conics", 2);
  check_f32(opacities, "opacities", 1);
  check_f32(colors, "colors", 2);
  check_f32(t_final, "t_final", 2);
  check_f32(d_out, "d_out", 3);
  check_f32(d_t_final, "d_t_final", 2);
  const int64_t n = means2d.size(0), nc_all = colors.size(1), nc = d_out.size(0);
  const int64_t height = t_final.size(0), width = t_final.size(1);
  TORCH_CHECK(nc <= nc_all && d_out.size(1) == height && d_out.size(2) == width, "d_out shape mismatch");
  TORCH_CHECK(last.scalar_type() == at::kInt && last.is_contiguous(), "last must be contiguous int32");
  const TileGrid grid(width, height);
  const Bins bins = check_bins(offsets, gids, grid);
  const int nt = resolve_threads(num_threads);
  std::vector<Packed> pk;
  pack_gaussians(means2d.data_ptr<float>(), conics.data_ptr<float>(), opacities.data_ptr<float>(), n, nt, pk);
  const float* col = colors.data_ptr<float>();
  const float* ptf = t_final.data_ptr<float>();
  const int32_t* plast = last.data_ptr<int32_t>();
  const float* pdo = d_out.data_ptr<float>();
  const float* pdt = d_t_final.data_ptr<float>();
  const int64_t hw = height * width;
  const int64_t d = 6 + nc;  // row: dmx, dmy, da, db, dc, dopacity, dcolor[C'] (channels with upstream)
  std::unique_ptr<float[]> rows(new float[static_cast<size_t>(bins.total) * d]);  // written where used[k]
  std::vector<uint8_t> used(static_cast<size_t>(bins.total), 0);

#pragma omp parallel num_threads(nt)
  {
    BwdTile st;
    std::vector<vf8> a_col(static_cast<size_t>(nc));  // per-channel colour-gradient accumulators
    std::vector<vf8> g_v(static_cast<size_t>(nc) * kTilePix / kLanes);
    float* g = reinterpret_cast<float*>(g_v.data());
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < grid.count(); ++tile) {
      const int64_t start = bins.off[tile], end = bins.off[tile + 1];
      if (start == end) continue;
      const int tx0 = static_cast<int>(tile % grid.gx) * kTile, ty0 = static_cast<int>(tile / grid.gx) * kTile;
      const int tw = std::min(kTile, grid.width - tx0), th = std::min(kTile, grid.height - ty0);
      int32_t max_last = 0;
      for (int i = 0; i < kTilePix; ++i) {
        st.T[i] = st.S[i] = st.K[i] = 0.0f;
        st.lst[i] = 0;
      }
      std::fill(g, g + nc * kTilePix, 0.0f);
      for (int y = 0; y < th; ++y) {
        const int64_t row = static_cast<int64_t>(ty0 + y) * width + tx0;
        for (int x = 0; x < tw; ++x) {
          const int i = y * kTile + x;
          st.T[i] = ptf[row + x];
          st.K[i] = ptf[row + x] * pdt[row + x];
          st.lst[i] = plast[row + x];
          max_last = std::max(max_last, st.lst[i]);
        }
        for (int64_t ch = 0; ch < nc; ++ch)
          std::memcpy(g + ch * kTilePix + y * kTile, pdo + ch * hw + row, sizeof(float) * tw);
      }
      for (int64_t k = end - 1; k >= start; --k) {
        if (k - kPrefetch >= start) {
          const int32_t ga = bins.gid[k - kPrefetch];
          __builtin_prefetch(pk.data() + ga);
          __builtin_prefetch(col + static_cast<int64_t>(ga) * nc_all);
        }
        const int32_t jl = static_cast<int32_t>(k - start);
        if (jl >= max_last) continue;
        const int32_t gi = bins.gid[k];
        const Packed p = pk[gi];
        Box b;
        if (!gaussian_box(p, tx0, ty0, tw, th, b)) continue;
        const float* c = col + static_cast<int64_t>(gi) * nc_all;
        float* r = rows.get() + k * d;
        if (nc == 3)
          backward_one<3>(p, b, tx0, ty0, jl, c, nc, g, st, a_col.data(), r);
        else if (nc == 4)
          backward_one<4>(p, b, tx0, ty0, jl, c, nc, g, st, a_col.data(), r);
        else
          backward_one<0>(p, b, tx0, ty0, jl, c, nc, g, st, a_col.data(), r);
        used[k] = 1;
      }
    }
  }
  Tensor d_means = at::empty({n, 2}, colors.options());
  Tensor d_conics = at::empty({n, 3}, colors.options());
  Tensor d_opac = at::empty({n}, colors.options());
  Tensor d_colors = at::empty({n, nc_all}, colors.options());
  float *pm = d_means.data_ptr<float>(), *pc = d_conics.data_ptr<float>(), *pop = d_opac.data_ptr<float>(),
        *pcol = d_colors.data_ptr<float>();
  reduce_rows(rows.get(), d, bins.gid, used.data(), bins.total, n, nt, [&](int64_t i, const float* s) {
    pm[2 * i] = s[0];
    pm[2 * i + 1] = s[1];
    pc[3 * i] = s[2];
    pc[3 * i + 1] = s[3];
    pc[3 * i + 2] = s[4];
    pop[i] = s[5];
    for (int64_t ch = 0; ch < nc; ++ch) pcol[i * nc_all + ch] = s[6 + ch];
    for (int64_t ch = nc; ch < nc_all; ++ch) pcol[i * nc_all + ch] = 0.0f;  // no upstream: exact zero
  });
  return {d_means, d_conics, d_opac, d_colors};
}

// ------------------------------------------------------------------------------------------------------------
// Vote: votes [N, K] = sum over pixels of alpha * T * weights[pixel, :]  (forward only).
// ------------------------------------------------------------------------------------------------------------
Tensor rasterize_vote(const Tensor& means2d, const Tensor& conics, const Tensor& opacities, const Tensor& offsets,
                      const Tensor& gids, const Tensor& weights, int64_t num_threads) {
  check_f32(means2d, "means2d", 2);
  check_f32(conics, "conics", 2);
  check_f32(opacities, "opacities", 1);
  check_f32(weights, "weights", 3);
  const int64_t n = means2d.size(0);
  const int64_t height = weights.size(0), width = weights.size(1), nk = weights.size(2);
  const TileGrid grid(width, height);
  const Bins bins = check_bins(offsets, gids, grid);
  const int nt = resolve_threads(num_threads);
  std::vector<Packed> pk;
  pack_gaussians(means2d.data_ptr<float>(), conics.data_ptr<float>(), opacities.data_ptr<float>(), n, nt, pk);
  const float* pw = weights.data_ptr<float>();
  std::unique_ptr<float[]> rows(new float[static_cast<size_t>(bins.total) * nk]);  // written where used[k]
  std::vector<uint8_t> used(static_cast<size_t>(bins.total), 0);

#pragma omp parallel num_threads(nt)
  {
    TileState st;
    std::vector<vf8> wt_v(static_cast<size_t>(nk) * kTilePix / kLanes);  // tile weights, channel-major
    float* wt = reinterpret_cast<float*>(wt_v.data());
    std::vector<vf8> acc(static_cast<size_t>(nk));  // per-label accumulators of the current intersection
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < grid.count(); ++tile) {
      if (bins.off[tile] == bins.off[tile + 1]) continue;
      const int tx0 = static_cast<int>(tile % grid.gx) * kTile, ty0 = static_cast<int>(tile / grid.gx) * kTile;
      const int tw = std::min(kTile, grid.width - tx0), th = std::min(kTile, grid.height - ty0);
      std::fill(wt, wt + nk * kTilePix, 0.0f);
      for (int y = 0; y < th; ++y)
        for (int x = 0; x < tw; ++x) {
          const float* src = pw + ((static_cast<int64_t>(ty0 + y) * width) + tx0 + x) * nk;
          for (int64_t kk = 0; kk < nk; ++kk) wt[kk * kTilePix + y * kTile + x] = src[kk];
        }
      front_to_back(
          pk.data(), bins, tile, grid, st, [&](int64_t, int32_t) { std::fill(acc.begin(), acc.end(), splat(0.0f)); },
          [&](int i, vf8 w) {
            for (int64_t kk = 0; kk < nk; ++kk) acc[kk] += w * loadf(wt + kk * kTilePix + i);
          },
          [&](int64_t k) {
            float* r = rows.get() + k * nk;
            for (int64_t kk = 0; kk < nk; ++kk) r[kk] = hsum(acc[kk]);
            used[k] = 1;
          });
    }
  }
  Tensor votes = at::empty({n, nk}, weights.options());
  float* pv = votes.data_ptr<float>();
  reduce_rows(rows.get(), nk, bins.gid, used.data(), bins.total, n, nt, [&](int64_t i, const float* s) {
    for (int64_t kk = 0; kk < nk; ++kk) pv[i * nk + kk] = s[kk];
  });
  return votes;
}

}  // namespace

TORCH_LIBRARY(gs_cpu_rasterizer, m) {
  m.def("bin(Tensor means2d, Tensor radii, Tensor depths, int width, int height, int num_threads)"
        " -> (Tensor, Tensor, Tensor)",
        &bin_gaussians);
  m.def("forward(Tensor means2d, Tensor conics, Tensor opacities, Tensor colors, Tensor tile_offsets,"
        " Tensor isect_gids, int width, int height, int num_threads) -> (Tensor, Tensor, Tensor)",
        &rasterize_forward);
  m.def("backward(Tensor means2d, Tensor conics, Tensor opacities, Tensor colors, Tensor tile_offsets,"
        " Tensor isect_gids, Tensor t_final, Tensor last, Tensor d_out, Tensor d_t_final, int num_threads)"
        " -> (Tensor, Tensor, Tensor, Tensor)",
        &rasterize_backward);
  m.def("vote(Tensor means2d, Tensor conics, Tensor opacities, Tensor tile_offsets, Tensor isect_gids,"
        " Tensor weights, int num_threads) -> Tensor",
        &rasterize_vote);
}
