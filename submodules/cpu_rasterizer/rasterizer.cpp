// CPU tile rasterizer for 3D Gaussian splatting with the Inria rasterizer's semantics.
//
// Compiled on first use by gaussian_renderer/native.py (torch.utils.cpp_extension.load) and registered as
// torch.ops.gs_cpu_rasterizer.*. Only minimal ATen headers are included (a build takes seconds, not the
// ~30 s of torch/extension.h). The per-Gaussian stage (projection, SH colours) is in projection.cpp and sh.cpp;
// this file does tile binning (Inria's 3-sigma rect, or the tight footprint: see bin_gaussians), front-to-back
// compositing, the back-to-front backward, the alpha*T votes (dense weights, label maps, sparse label votes)
// and the contribution pass that also reports each pixel's stopper.
//
// Semantics per pixel (Inria's renderCUDA): pixel (i, j) is evaluated at the float point (i, j) in the frame
// of means2d; Gaussians in (tile, depth) order; power = -0.5 (a dx^2 + c dy^2) - b dx dy (skip power > 0);
// alpha = min(0.99, o exp(power)) (skip alpha < 1/255); stop before a Gaussian that would bring T below 1e-4.
// The backward passes the 0.99 clamp straight through (d alpha / d(o G) = 1 even when clamped), like Inria.
//
// Determinism: every output element is produced by exactly one thread in a fixed order. Per-Gaussian
// gradients (and votes) are first written as one row per (tile, Gaussian) intersection, then summed per
// Gaussian in intersection order (each thread sums the Gaussians of its own index range). No atomics, so
// results are bit-identical for any thread count.
//
// Inputs: every op checks shapes, dtypes, devices, contiguity and index ranges first (common.h's check_arg,
// check_bins below); kernel arguments carry their shapes as comments.
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
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include "common.h"
#include "simd.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
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

using namespace gs_simd;  // vf8 / vi8 and their lane-wise math (simd.h)

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

// The "alpha >= 1/255" bounds of one Gaussian, shared by the pixel loops (pack_gaussians) and the tight binning
// (bin_gaussians), so the two can never disagree about where a Gaussian may be evaluated.
// alpha >= 1/255 needs o exp(power) >= 1/255, i.e. q = a dx^2 + 2 b dx dy + c dy^2 <= 2 ln(255 o).
// The ellipse q <= r2 spans |dx| <= sqrt(r2 * Sxx), Sxx = c / (ac - b^2) (the inverse conic).
// Also returns det = ac - b^2 and ln(255 o) (double) for the binning's AccuTile level.
static inline void alpha_box(float a, float b, float c, float opacity, float& ex, float& ey, float& lpow,
                             double& det, double& log255o) {
  const double o = opacity;
  det = static_cast<double>(a) * c - static_cast<double>(b) * b;
  log255o = o > 0.0 ? std::log(255.0 * o) : -INFINITY;
  // o exp(power) >= 1/255 needs power >= -ln(255 o); 1e-3 below that, o exp(power) < 0.999 / 255 whatever the
  // ~1 ulp error of vexp and of the product, so lanes under lpow are provably invalid.
  lpow = o > 0.0 ? static_cast<float>(-log255o - 1e-3) : 1e30f;
  if (!(o * 1.001 >= 1.0 / 255.0)) {
    ex = ey = -1.0f;  // alpha = o * G <= o < 1/255 everywhere (also catches NaN)
  } else if (!(det > 0.0) || !(a > 0.0f) || !(c > 0.0f)) {
    ex = ey = 1e30f;  // degenerate conic: evaluate the whole tile
  } else {
    const double r2 = 2.0 * std::max(log255o, 0.0) + 1e-3;
    ex = static_cast<float>(std::sqrt(r2 * c / det) * 1.001 + 0.5);
    ey = static_cast<float>(std::sqrt(r2 * a / det) * 1.001 + 0.5);
  }
}

void pack_gaussians(const float* means2d,  // [N, 2]
                    const float* conics,   // [N, 3]
                    const float* opac,     // [N]
                    int64_t n, int nt, std::vector<Packed>& out) {
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
    double det, log255o;
    alpha_box(p.a, p.b, p.c, p.o, p.ex, p.ey, p.lpow, det, log255o);
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

using gs_cpu::check_arg;

// ------------------------------------------------------------------------------------------------------------
// Binning: which tiles each Gaussian is composited on, then a stable (tile, depth) order (ties in depth keep the
// Gaussian index order).
//
// Inria mode ("reference"): every tile of Inria's getRect, the square of radius r = ceil(3 sqrt(lambda_max)).
// Tight mode: the subset of those tiles on which the pixel loops below can find a lane with alpha >= 1/255.
// A tile is left out only when that is impossible, so every per-tile list is the Inria list minus Gaussians
// that would have been skipped at every pixel of the tile; the compositing, the backward and the votes are
// then bit-identical (a skipped Gaussian changes no state, and its per-intersection row is an exact +0).
// Two tests, both conservative:
//  1. the opacity-aware box: the pixel box (alpha_box's ex, ey) outside which the pixel loops never evaluate a
//     Gaussian at all (gsplat's opacity-aware radius, extent sqrt(2 ln(255 o)) sigma, per axis, as in
//     gsplat/cuda/csrc/ProjectionEWA3DGSFused.cu @ 10586bb);
//  2. AccuTile (Speedy-Splat, arXiv 2412.00578 eq. 15-16; gsplat/cuda/csrc/IntersectAccuTile.cuh @ bc1391a):
//     per row of tiles, the exact x-range of the ellipse q <= t over the row's pixel strip (extremes at the
//     strip edges or at the ellipse's leftmost / rightmost points), so elongated, tilted ellipses skip the
//     corners of their box. t is not 2 ln(255 o) but that bound widened to cover the float evaluation of the
//     exponent (see accutile_threshold), so a left-out tile provably has power < lpow at every pixel.
// ------------------------------------------------------------------------------------------------------------

// Float unit roundoff and gamma_6 = 6u / (1 - 6u): the error bound of six chained float roundings.
constexpr double kUnitRoundoff = 1.0 / 16777216.0;
constexpr double kGamma6 = 6.0 * kUnitRoundoff / (1.0 - 6.0 * kUnitRoundoff);

// A Gaussian's tile footprint, as the depth-order passes read it (32 bytes, one cache line in two): the tile
// rect [x0, x1) x [y0, y1), per row narrowed by AccuTile when t > 0. Footprints of up to kMaskRows x kMaskCols
// tiles are narrowed once, when built, and stored as a bit mask of the rect's tiles (t < 0).
struct alignas(32) Footprint {
  float mx, my, a, b;      // mean (pixel frame) and conic a, b as the pixel loops see them
  union {
    float c;               // conic c
    uint32_t mask;         // t < 0: bit r * kMaskCols + c set = tile (x0 + c, y0 + r) is in the footprint
  };
  float t;                 // > 0: AccuTile level (tiles whose pixels all have q > t are left out); 0: off
  int16_t x0, y0, x1, y1;  // tiles of Inria's rect, intersected with the alpha box in tight mode
};
constexpr int kMaskRows = 4, kMaskCols = 8;
static_assert(sizeof(Footprint) == 32, "Footprint must stay one 32-byte record");
constexpr int kMaxGridSide = 32767;  // tiles per side that fit Footprint's int16 coordinates

TileGrid make_grid(const char* op, int64_t width, int64_t height) {
  TORCH_CHECK_VALUE(width > 0 && height > 0 && width <= 16 * int64_t(kMaxGridSide) && height <= 16 * int64_t(kMaxGridSide),
              op, ": width and height must lie in 1..", 16 * kMaxGridSide, ", got ", width, "x", height);
  return TileGrid(width, height);
}

// The AccuTile level t (0: do not use AccuTile). The pixel loops evaluate power_f, the float value of
// -q/2 computed as in chunk_power: six chained roundings per term, so |power_f + q/2| <= gamma6 * S with
// S = a dx^2 / 2 + c dy^2 / 2 + |b dx dy| <= K q, K = max(a, c) / lambda_min(conic). A lane can only be valid
// when power_f >= lpow_f >= -(ln(255 o) + 1e-3)(1 + u); hence q > 2 (ln(255 o) + 1e-3)(1 + u) / (1 - 2 gamma6 K)
// makes it invalid. Badly conditioned conics (2 gamma6 K >= 1/4) keep the whole box.
static inline float accutile_threshold(float a, float b, float c, double det, double log255o) {
  const double half_diff = 0.5 * (static_cast<double>(a) - c);
  const double lmax = 0.5 * (static_cast<double>(a) + c) + std::sqrt(half_diff * half_diff + static_cast<double>(b) * b);
  const double k = std::max<double>(a, c) * lmax / det * 1.001;  // max(a, c) / lambda_min, lambda_min = det / lmax
  if (!(det > 0.0) || !(2.0 * kGamma6 * k < 0.25)) return 0.0f;
  const double level = log255o + 1e-3;
  double t = 2.0 * level * (1.0 + kUnitRoundoff) * (1.0 + 1e-12) / (1.0 - 2.0 * kGamma6 * k);
  t = std::max(t, 1e-9);  // level <= 0: only a pixel exactly at the mean could pass (power_f = 0)
  float tf = static_cast<float>(t);
  if (static_cast<double>(tf) < t) tf = std::nextafter(tf, INFINITY);  // round up: stay conservative
  return std::isfinite(tf) ? tf : 0.0f;
}

// Calls row(ty, tx0, tx1) for each tile row of the footprint with a non-empty column range [tx0, tx1).
// AccuTile narrows footprints of at least 2 x 2 tiles (a single row or column of the alpha box is already the
// ellipse's extent, up to image-border clipping) when t > 0 (set from kAccuTileArea tiles on).
template <typename Row>
static inline void accutile_rows(const Footprint& f, const TileGrid& grid, Row&& row) {
  if (!(f.t > 0.0f) || f.x1 - f.x0 < 2 || f.y1 - f.y0 < 2) {
    for (int32_t ty = f.y0; ty < f.y1; ++ty) row(ty, f.x0, f.x1);
    return;
  }
  // Ellipse a u^2 + 2 b u v + c v^2 <= t around the mean (u = x - mx, v = y - my; q is even in (u, v)).
  const double a = f.a, b = f.b, c = f.c, t = f.t;
  const double det = a * c - b * b, inv_det = 1.0 / det, inv_a = 1.0 / a, at = a * t;
  const double vmax = std::sqrt(at * inv_det), umax = std::sqrt(t * c * inv_det);
  const double v_right = -b * umax / c;  // v of the rightmost point (u = umax); the leftmost is at -v_right
  const double ueps = 1e-7 * (1.0 + std::fabs(static_cast<double>(f.mx)) + umax);
  const double veps = 1e-7 * (1.0 + std::fabs(static_cast<double>(f.my)) + vmax);
  const double wmax = grid.width - 1;
  for (int32_t ty = f.y0; ty < f.y1; ++ty) {
    const double ylo = static_cast<double>(ty) * kTile, yhi = std::min<double>(ylo + kTile - 1, grid.height - 1);
    const double va = std::max(ylo - f.my - veps, -vmax), vb = std::min(yhi - f.my + veps, vmax);
    if (!(va <= vb)) continue;
    // right(v) = (-b v + sqrt(a t - det v^2)) / a is concave, left(v) = (-b v - sqrt(.)) / a convex: their
    // extremes over [va, vb] lie at the clamped rightmost / leftmost points of the ellipse.
    const double vr = std::min(std::max(v_right, va), vb), vl = std::min(std::max(-v_right, va), vb);
    const double xhi = f.mx + (-b * vr + std::sqrt(std::max(0.0, at - det * vr * vr))) * inv_a + ueps;
    const double xlo = f.mx + (-b * vl - std::sqrt(std::max(0.0, at - det * vl * vl))) * inv_a - ueps;
    if (!(xhi >= 0.0) || !(xlo <= wmax)) continue;
    const int plo = static_cast<int>(std::ceil(std::max(xlo, 0.0)));
    const int phi = static_cast<int>(std::floor(std::min(xhi, wmax)));
    const int32_t tx0 = std::max<int32_t>(f.x0, plo / kTile), tx1 = std::min<int32_t>(f.x1, phi / kTile + 1);
    if (plo <= phi && tx0 < tx1) row(ty, tx0, tx1);
  }
}

// Narrows a small footprint once into its bit mask (t < 0 afterwards); larger ones keep t for accutile_rows.
static inline void precompute_mask(Footprint& f, const TileGrid& grid) {
  if (!(f.t > 0.0f) || f.x1 - f.x0 < 2 || f.y1 - f.y0 < 2 || f.x1 - f.x0 > kMaskCols || f.y1 - f.y0 > kMaskRows)
    return;
  uint32_t bits = 0;
  accutile_rows(f, grid, [&](int32_t ty, int32_t tx0, int32_t tx1) {
    for (int32_t tx = tx0; tx < tx1; ++tx) bits |= 1u << ((ty - f.y0) * kMaskCols + (tx - f.x0));
  });
  f.mask = bits;
  f.t = -1.0f;
}

// Calls tile(index) for every tile of the footprint, in row-major order.
template <typename Tile>
static inline void footprint_tiles(const Footprint& f, const TileGrid& grid, Tile&& tile) {
  if (f.t < 0.0f) {
    for (uint32_t bits = f.mask; bits != 0; bits &= bits - 1) {
      const int j = __builtin_ctz(bits);
      tile((f.y0 + j / kMaskCols) * grid.gx + f.x0 + j % kMaskCols);
    }
    return;
  }
  accutile_rows(f, grid, [&](int32_t ty, int32_t tx0, int32_t tx1) {
    for (int32_t tx = tx0; tx < tx1; ++tx) tile(ty * grid.gx + tx);
  });
}

constexpr int kAccuTileArea = 8;  // AccuTile from footprints of 8 tiles on: on smaller ones it costs more than
                                  // the intersections it removes (~0.5 per 2 x 2 footprint) save in the kernels

// Footprints of Gaussians [i0, i0 + 8) (lanes past n stay empty): Inria's tile count (touched) and, if listed,
// the footprint. Vectorised and branch-free up to AccuTile. Inria's rect is computed with the same float
// operations as Inria's getRect. The tight box contains alpha_box's, hence every tile on which gaussian_box
// lets the pixel loops evaluate the Gaussian: opacity < 1/255 composites nowhere (alpha <= o G <= o); the log
// is vlog plus a 5e-4 margin; det is a lower bound of ac - b^2 (degenerate when not positive: whole rect, as in
// alpha_box); the extents are scaled by 1.0012 and padded by 0.6 px instead of 1.001 and 0.5.
static void footprint_block(const float* m,    // [N, 2]
                            const float* con,  // [N, 3]
                            const float* op,   // [N]
                            const int32_t* rad, const float* dep, int64_t i0, int64_t n, const TileGrid& grid,
                            bool tight, Footprint* fp, int32_t* touched, uint8_t* listed) {
  vf8 mx{}, my{}, a{}, b{}, c{}, o{}, dz{};
  vi8 r{};
  const int lanes = static_cast<int>(std::min<int64_t>(kLanes, n - i0));
  for (int l = 0; l < lanes; ++l) {
    const int64_t i = i0 + l;
    mx[l] = m[2 * i];
    my[l] = m[2 * i + 1];
    a[l] = con[3 * i];
    b[l] = con[3 * i + 1];
    c[l] = con[3 * i + 2];
    o[l] = op[i];
    dz[l] = dep[i];
    r[l] = rad[i];
  }
  auto finite = [](vf8 v) { return (v - v) == splat(0.0f); };  // false for inf and NaN
  const vi8 ok0 = (r > 0) & finite(mx) & finite(my) & finite(dz);
  const vf8 rf = __builtin_convertvector(r, vf8);
  auto cl = [&](vf8 v, int g) {  // Inria's min(grid, max(0, (int)v)), NaN lanes (masked out) -> 0
    v = ok0 ? v : splat(0.0f);
    v = v < 0.0f ? splat(0.0f) : v;
    v = v > static_cast<float>(g) ? splat(static_cast<float>(g)) : v;
    return __builtin_convertvector(v, vi8);
  };
  // the same expressions as Inria's (px + r + BLOCK_X - 1) / BLOCK_X, evaluated left to right
  const vi8 x0 = cl((mx - rf) / kTile, grid.gx), x1 = cl((mx + rf + kTile - 1) / kTile, grid.gx);
  const vi8 y0 = cl((my - rf) / kTile, grid.gy), y1 = cl((my + rf + kTile - 1) / kTile, grid.gy);
  const vi8 inria = ok0 & (x1 > x0) & (y1 > y0);
  const vi8 count = inria ? (x1 - x0) * (y1 - y0) : splati(0);
  vi8 bx0 = x0, bx1 = x1, by0 = y0, by1 = y1, ok = inria, deg = splati(0);
  if (tight) {
    const vi8 vis = o >= kMinAlpha;
    const vf8 lg = vlog(255.0f * (vis ? o : splat(1.0f)));
    const vf8 ac = a * c, bb = b * b;
    const vf8 det = (ac - bb) - (5.0f * static_cast<float>(kUnitRoundoff)) * (ac + bb);
    deg = ~((det > 0.0f) & (a > 0.0f) & (c > 0.0f));
    const vf8 r2 = 2.0f * (lg > 0.0f ? lg : splat(0.0f)) + 2e-3f;
    const vf8 inv_det = 1.0f / (deg ? splat(1.0f) : det);
    const vf8 ex = lanewise<Lanewise::kSqrt>(r2 * (deg ? splat(1.0f) : c) * inv_det) * 1.0012f + 0.6f;
    const vf8 ey = lanewise<Lanewise::kSqrt>(r2 * (deg ? splat(1.0f) : a) * inv_det) * 1.0012f + 0.6f;
    // tiles holding a pixel of [ceil(m - e), floor(m + e)] along each axis (cf. clip_range)
    auto box = [&](vf8 mm, vf8 e, int size, vi8 t0, vi8 t1, vi8& o0, vi8& o1) {
      const vf8 flo = lanewise<Lanewise::kCeil>(mm - e), fhi = lanewise<Lanewise::kFloor>(mm + e);
      const vi8 hit = (fhi >= 0.0f) & (flo <= static_cast<float>(size - 1)) & (flo <= fhi);
      vf8 lo = flo < 0.0f ? splat(0.0f) : flo, hi = fhi > static_cast<float>(size - 1) ? splat(size - 1.0f) : fhi;
      lo = hit ? lo : splat(0.0f);
      hi = hit ? hi : splat(0.0f);
      const vi8 b0 = __builtin_convertvector(lo, vi8) >> 4, b1 = (__builtin_convertvector(hi, vi8) >> 4) + 1;
      o0 = deg ? t0 : (b0 > t0 ? b0 : t0);
      o1 = deg ? t1 : (b1 < t1 ? b1 : t1);
      return deg | hit;
    };
    const vi8 hx = box(mx, ex, grid.width, x0, x1, bx0, bx1), hy = box(my, ey, grid.height, y0, y1, by0, by1);
    ok = inria & vis & hx & hy & (bx1 > bx0) & (by1 > by0);
  }
  for (int l = 0; l < lanes; ++l) {
    const int64_t i = i0 + l;
    touched[i] = count[l];
    Footprint f;
    f.mx = mx[l];
    f.my = my[l];
    f.a = a[l];
    f.b = b[l];
    f.c = c[l];
    f.t = 0.0f;
    f.x0 = static_cast<int16_t>(bx0[l]);
    f.y0 = static_cast<int16_t>(by0[l]);
    f.x1 = static_cast<int16_t>(bx1[l]);
    f.y1 = static_cast<int16_t>(by1[l]);
    bool keep = ok[l] != 0;
    if (keep && tight && !deg[l] && (bx1[l] - bx0[l]) * (by1[l] - by0[l]) >= kAccuTileArea) {
      const double det = static_cast<double>(f.a) * f.c - static_cast<double>(f.b) * f.b;
      f.t = accutile_threshold(f.a, f.b, f.c, det, std::log(255.0 * static_cast<double>(o[l])));
      precompute_mask(f, grid);
      keep = !(f.t < 0.0f && f.mask == 0);
    }
    fp[i] = f;
    listed[i] = keep ? 1 : 0;
  }
}

// Stable LSD radix sort of `order` by 32-bit keys, parallel over contiguous chunks (per-chunk histograms, offsets
// in (digit, chunk) order): the permutation of a stable sort is unique, so any thread count gives the same one.
static void radix_sort(std::vector<uint32_t>& keys, std::vector<int32_t>& order, int nt) {
  const int64_t nv = static_cast<int64_t>(keys.size());
  constexpr int kBits = 11;
  constexpr int kBuckets = 1 << kBits;
  const int nchunks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(nt, nv / 4096 + 1)));
  auto chunk_begin = [&](int c) { return nv * c / nchunks; };
  std::vector<uint32_t> keys2(nv);
  std::vector<int32_t> order2(nv);
  std::vector<int64_t> hist(static_cast<size_t>(nchunks) * kBuckets);
  for (int shift = 0; shift < 32; shift += kBits) {
    std::fill(hist.begin(), hist.end(), 0);
#pragma omp parallel for num_threads(nt) schedule(static, 1)
    for (int c = 0; c < nchunks; ++c) {
      int64_t* h = hist.data() + static_cast<size_t>(c) * kBuckets;
      for (int64_t i = chunk_begin(c); i < chunk_begin(c + 1); ++i) h[(keys[i] >> shift) & (kBuckets - 1)]++;
    }
    int64_t s = 0;
    bool one_bucket = false;
    for (int b = 0; b < kBuckets; ++b) {
      int64_t in_bucket = 0;
      for (int c = 0; c < nchunks; ++c) {
        int64_t& h = hist[static_cast<size_t>(c) * kBuckets + b];
        in_bucket += h;
        const int64_t v = h;
        h = s;
        s += v;
      }
      one_bucket = one_bucket || in_bucket == nv;
    }
    if (one_bucket) continue;  // every key has this digit: the pass is the identity
#pragma omp parallel for num_threads(nt) schedule(static, 1)
    for (int c = 0; c < nchunks; ++c) {
      int64_t* h = hist.data() + static_cast<size_t>(c) * kBuckets;
      for (int64_t i = chunk_begin(c); i < chunk_begin(c + 1); ++i) {
        const int64_t dst = h[(keys[i] >> shift) & (kBuckets - 1)]++;
        keys2[dst] = keys[i];
        order2[dst] = order[i];
      }
    }
    keys.swap(keys2);
    order.swap(order2);
  }
}

// Exclusive prefix sum of count(q) over q in [0, n), in parallel chunks; returns the total.
template <typename Count>
static int64_t prefix_sum(int64_t n, int nt, std::vector<int64_t>& out, Count&& count) {
  out.resize(n + 1);
  const int nchunks = nt;
  std::vector<int64_t> part(nchunks + 1, 0);
#pragma omp parallel for num_threads(nt) schedule(static, 1)
  for (int c = 0; c < nchunks; ++c) {
    int64_t s = 0;
    for (int64_t q = n * c / nchunks; q < n * (c + 1) / nchunks; ++q) s += count(q);
    part[c + 1] = s;
  }
  for (int c = 0; c < nchunks; ++c) part[c + 1] += part[c];
#pragma omp parallel for num_threads(nt) schedule(static, 1)
  for (int c = 0; c < nchunks; ++c) {
    int64_t s = part[c];
    for (int64_t q = n * c / nchunks; q < n * (c + 1) / nchunks; ++q) {
      out[q] = s;
      s += count(q);
    }
  }
  out[n] = part[nchunks];
  return part[nchunks];
}

// (tile_offsets [T + 1] int64, isect_gids [M] int32, touched [N] int32 = Inria's tile count per Gaussian, which
// keeps its meaning in tight mode: radii / visibility_filter, hence training, do not depend on the mode).
std::tuple<Tensor, Tensor, Tensor> bin_gaussians(const Tensor& means2d,    // [N, 2] float32
                                                 const Tensor& conics,     // [N, 3] float32
                                                 const Tensor& opacities,  // [N] float32
                                                 const Tensor& radii,      // [N] int32, 0 = culled
                                                 const Tensor& depths,     // [N] float32
                                                 int64_t width, int64_t height, bool tight,
                                                 const std::optional<Tensor>& tile_mask,  // [T] bool: only these
                                                 int64_t num_threads) {
  check_arg(means2d, "bin", "means2d", at::kFloat, {-1, 2});
  const int64_t n = means2d.size(0);
  TORCH_CHECK(n < (int64_t(1) << 31), "bin: at most 2^31 - 1 Gaussians, got ", n);
  check_arg(conics, "bin", "conics", at::kFloat, {n, 3});
  check_arg(opacities, "bin", "opacities", at::kFloat, {n});
  check_arg(radii, "bin", "radii", at::kInt, {n});
  check_arg(depths, "bin", "depths", at::kFloat, {n});
  const TileGrid grid = make_grid("bin", width, height);
  const int64_t ntiles = grid.count();
  const bool* mask = nullptr;
  if (tile_mask.has_value() && tile_mask->defined()) {
    check_arg(*tile_mask, "bin", "tile_mask", at::kBool, {ntiles});
    mask = tile_mask->data_ptr<bool>();
  }
  const int nt = resolve_threads(num_threads);
  const float *m = means2d.data_ptr<float>(), *con = conics.data_ptr<float>(), *op = opacities.data_ptr<float>();
  const float* dep = depths.data_ptr<float>();
  const int32_t* rad = radii.data_ptr<int32_t>();

  // 1. Footprints (Gaussian order) and Inria's tile counts. A Gaussian whose footprint is empty is never listed;
  // the others are, even if AccuTile or the tile mask then leaves them no tile (that only costs a sort slot).
  Tensor touched = at::empty({n}, radii.options());
  int32_t* tch = touched.data_ptr<int32_t>();
  std::vector<Footprint> fp(n);
  std::vector<uint8_t> listed(n);
#pragma omp parallel for num_threads(nt) schedule(static, 512)
  for (int64_t i0 = 0; i0 < n; i0 += kLanes) {
    footprint_block(m, con, op, rad, dep, i0, n, grid, tight, fp.data(), tch, listed.data());
    if (mask == nullptr) continue;
    for (int64_t i = i0; i < std::min<int64_t>(i0 + kLanes, n); ++i) {  // restricted binning: sort only the
      bool any = false;                                                  // Gaussians reaching a masked tile
      if (listed[i]) footprint_tiles(fp[i], grid, [&](int32_t tile) { any = any || mask[tile]; });
      listed[i] = any ? 1 : 0;
    }
  }

  // 2. The listed Gaussians in index order, stably sorted by depth (positive floats sort like their bit
  // patterns; negative depths cannot occur after the near cull, but are mapped monotonically anyway), and their
  // footprints gathered into that order (the one random access per Gaussian).
  std::vector<int64_t> vis_start;
  const int64_t nv = prefix_sum(n, nt, vis_start, [&](int64_t i) { return static_cast<int64_t>(listed[i]); });
  std::vector<int32_t> order(nv);
  std::vector<uint32_t> keys(nv);
#pragma omp parallel for num_threads(nt) schedule(static, 4096)
  for (int64_t i = 0; i < n; ++i) {
    if (!listed[i]) continue;
    uint32_t u;
    std::memcpy(&u, &dep[i], 4);
    keys[vis_start[i]] = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    order[vis_start[i]] = static_cast<int32_t>(i);
  }
  std::vector<int64_t>().swap(vis_start);
  radix_sort(keys, order, nt);
  std::vector<uint32_t>().swap(keys);
  std::vector<Footprint> fpd(nv);
#pragma omp parallel for num_threads(nt) schedule(static, 4096)
  for (int64_t q = 0; q < nv; ++q) {
    if (q + 16 < nv) __builtin_prefetch(&fp[order[q + 16]]);
    fpd[q] = fp[order[q]];
  }
  std::vector<Footprint>().swap(fp);

  // 3. Per-chunk tile histograms -> offsets -> fill. Chunks are contiguous in depth order, so the result is the
  // same for any thread count.
  const int nchunks = nt;
  auto chunk_begin = [&](int c) { return nv * c / nchunks; };
  std::vector<int64_t> counts(static_cast<size_t>(nchunks) * ntiles, 0);
#pragma omp parallel for num_threads(nt) schedule(static, 1)
  for (int c = 0; c < nchunks; ++c) {
    int64_t* hist = counts.data() + static_cast<size_t>(c) * ntiles;
    for (int64_t q = chunk_begin(c); q < chunk_begin(c + 1); ++q)
      footprint_tiles(fpd[q], grid, [&](int32_t tile) {
        if (mask == nullptr || mask[tile]) hist[tile]++;
      });
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
#pragma omp parallel for num_threads(nt) schedule(static, 1)
  for (int c = 0; c < nchunks; ++c) {
    int64_t* pos = counts.data() + static_cast<size_t>(c) * ntiles;
    for (int64_t q = chunk_begin(c); q < chunk_begin(c + 1); ++q) {
      const int32_t g = order[q];
      footprint_tiles(fpd[q], grid, [&](int32_t tile) {
        if (mask == nullptr || mask[tile]) gid[pos[tile]++] = g;
      });
    }
  }
  return {offsets, gids, touched};
}

struct Bins {
  const int64_t* off;
  const int32_t* gid;
  int64_t total;
};

// The bins of an op call: shapes, and every index the kernels will follow (offsets non-decreasing from 0 to M,
// Gaussian ids in [0, N)), so inconsistent inputs raise instead of reading out of bounds.
Bins check_bins(const char* op, const Tensor& offsets, const Tensor& gids, const TileGrid& grid, int64_t n, int nt) {
  check_arg(offsets, op, "tile_offsets", at::kLong, {grid.count() + 1});
  check_arg(gids, op, "isect_gids", at::kInt, {-1});
  const int64_t* off = offsets.data_ptr<int64_t>();
  const int64_t total = gids.numel();
  bool monotone = off[0] == 0 && off[grid.count()] == total;
  for (int64_t t = 0; t < grid.count() && monotone; ++t) monotone = off[t] <= off[t + 1];
  TORCH_CHECK_VALUE(monotone, op, ": tile_offsets must rise from 0 to len(isect_gids) = ", total,
              " (pass the tile_offsets and isect_gids of one bin call for this image size)");
  const int32_t* gid = gids.data_ptr<int32_t>();
  int64_t bad = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : bad)
  for (int64_t k = 0; k < total; ++k) bad += (gid[k] < 0 || gid[k] >= n) ? 1 : 0;
  TORCH_CHECK_VALUE(bad == 0, op, ": isect_gids holds ", bad, " Gaussian id(s) outside [0, N = ", n,
              "); bin and this call must see the same Gaussians");
  return {off, gid, total};
}

// Sums the written per-intersection rows [M, D] (used[k] != 0; the others are uninitialised and count as zero)
// per Gaussian in intersection order (deterministic), and hands each Gaussian's sum [D] to emit(i, sum).
// Parallel over Gaussian ranges: every thread scans the intersections in order and adds the rows of its own
// Gaussians, so each sum is formed in the same order whatever the thread count (bit-identical results).
template <typename Emit>
void reduce_rows(const float* rows, int64_t d, const int32_t* gid, const uint8_t* used, int64_t total, int64_t n,
                 int nt, Emit&& emit) {
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
    const int64_t g0 = n * t / tn, g1 = n * (t + 1) / tn;
    std::vector<float> acc(static_cast<size_t>((g1 - g0) * d), 0.0f);
    for (int64_t k = 0; k < total; ++k) {
      const int64_t g = gid[k];
      if (!used[k] || g < g0 || g >= g1) continue;
      float* o = acc.data() + (g - g0) * d;
      const float* r = rows + k * d;
      for (int64_t j = 0; j < d; ++j) o[j] += r[j];
    }
    for (int64_t g = g0; g < g1; ++g) emit(g, acc.data() + (g - g0) * d);
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

// on_stop(i, stop, g): optional, called for chunks in which Gaussian g stops some pixels (lanes set in stop).
struct NoStop {
  void operator()(int, vi8, int32_t) const {}
};

template <typename OnBegin, typename OnChunk, typename OnEnd, typename OnStop = NoStop>
void front_to_back(const Packed* pk, const Bins& bins, int64_t tile, const TileGrid& grid, TileState& st,
                   OnBegin&& on_begin, OnChunk&& on_chunk, OnEnd&& on_end, OnStop&& on_stop = OnStop()) {
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
          if constexpr (!std::is_same_v<std::decay_t<OnStop>, NoStop>) {
            if (any_lane(stop)) on_stop(i, stop, g);
          }
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
// The per-Gaussian screen-space inputs every compositing op takes: means2d [N, 2], conics [N, 3], opacities [N].
int64_t check_screen(const char* op, const Tensor& means2d, const Tensor& conics, const Tensor& opacities) {
  check_arg(means2d, op, "means2d", at::kFloat, {-1, 2});
  const int64_t n = means2d.size(0);
  check_arg(conics, op, "conics", at::kFloat, {n, 3});
  check_arg(opacities, op, "opacities", at::kFloat, {n});
  return n;
}

// The compositing of rasterize_forward over every tile: out [C, H, W] (no background), t_final [H, W], last
// [H, W] (nullptr: not kept). Shared with forward_subsets, so a subset's image is this very loop over its lists.
static void forward_tiles(const std::vector<Packed>& pk, const float* col, int64_t nc, const Bins& bins,
                          const TileGrid& grid, int nt, float* po, float* pt, int32_t* pl) {
  const int64_t hw = static_cast<int64_t>(grid.height) * grid.width;
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
        const int64_t row = static_cast<int64_t>(ty0 + y) * grid.width + tx0;
        std::memcpy(pt + row, st.T + y * kTile, sizeof(float) * tw);
        if (pl != nullptr) std::memcpy(pl + row, st.last + y * kTile, sizeof(int32_t) * tw);
        for (int64_t ch = 0; ch < nc; ++ch)
          std::memcpy(po + ch * hw + row, acc + ch * kTilePix + y * kTile, sizeof(float) * tw);
      }
    }
  }
}

std::tuple<Tensor, Tensor, Tensor> rasterize_forward(const Tensor& means2d,    // [N, 2]
                                                     const Tensor& conics,     // [N, 3]
                                                     const Tensor& opacities,  // [N]
                                                     const Tensor& colors,     // [N, C]
                                                     const Tensor& offsets,    // [T + 1] int64 from bin
                                                     const Tensor& gids,       // [M] int32 from bin
                                                     int64_t width, int64_t height, int64_t num_threads) {
  const int64_t n = check_screen("forward", means2d, conics, opacities);
  check_arg(colors, "forward", "colors", at::kFloat, {n, -1});
  const int64_t nc = colors.size(1);
  const TileGrid grid = make_grid("forward", width, height);
  const Bins bins = check_bins("forward", offsets, gids, grid, n, resolve_threads(num_threads));
  const int nt = resolve_threads(num_threads);
  std::vector<Packed> pk;
  pack_gaussians(means2d.data_ptr<float>(), conics.data_ptr<float>(), opacities.data_ptr<float>(), n, nt, pk);

  Tensor out = at::empty({nc, height, width}, colors.options());
  Tensor t_final = at::empty({height, width}, colors.options());
  Tensor last = at::empty({height, width}, gids.options());
  forward_tiles(pk, colors.data_ptr<float>(), nc, bins, grid, nt, out.data_ptr<float>(), t_final.data_ptr<float>(),
                last.data_ptr<int32_t>());
  return {out, t_final, last};
}

// Forward images of S subsets of one binned set of Gaussians: out [S, C, H, W] (no background), t_final [S, H, W].
// Subset s composites each tile's list without the Gaussians outside members[s] (order kept), which is what
// binning that subset alone gives (binning is per Gaussian, the depth sort stable with ties in index order), so
// image s equals forward() of the subset alone bit for bit. The inputs are checked and the Gaussians packed once
// for all S (previews: the full scene, the extracted and the deleted one from one projection and one binning).
std::tuple<Tensor, Tensor> rasterize_forward_subsets(const Tensor& means2d,    // [N, 2]
                                                     const Tensor& conics,     // [N, 3]
                                                     const Tensor& opacities,  // [N]
                                                     const Tensor& colors,     // [N, C]
                                                     const Tensor& offsets,    // [T + 1] int64 from bin
                                                     const Tensor& gids,       // [M] int32 from bin
                                                     const Tensor& members,    // [S, N] bool
                                                     int64_t width, int64_t height, int64_t num_threads) {
  const int64_t n = check_screen("forward_subsets", means2d, conics, opacities);
  check_arg(colors, "forward_subsets", "colors", at::kFloat, {n, -1});
  check_arg(members, "forward_subsets", "members", at::kBool, {-1, n});
  const int64_t nc = colors.size(1), ns = members.size(0);
  const TileGrid grid = make_grid("forward_subsets", width, height);
  const int nt = resolve_threads(num_threads);
  const Bins bins = check_bins("forward_subsets", offsets, gids, grid, n, nt);
  std::vector<Packed> pk;
  pack_gaussians(means2d.data_ptr<float>(), conics.data_ptr<float>(), opacities.data_ptr<float>(), n, nt, pk);

  Tensor out = at::empty({ns, nc, height, width}, colors.options());
  Tensor t_final = at::empty({ns, height, width}, colors.options());
  const int64_t tiles = grid.count(), hw = height * width;
  std::vector<int64_t> off(static_cast<size_t>(tiles + 1));
  std::vector<int32_t> ids(static_cast<size_t>(bins.total));
  for (int64_t s = 0; s < ns; ++s) {
    const bool* mem = members.data_ptr<bool>() + s * n;
    // Per-tile counts, then each tile's members copied in list order (tiles in parallel).
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      int64_t c = 0;
      for (int64_t k = bins.off[t]; k < bins.off[t + 1]; ++k) c += mem[bins.gid[k]] ? 1 : 0;
      off[static_cast<size_t>(t + 1)] = c;
    }
    off[0] = 0;
    for (int64_t t = 0; t < tiles; ++t) off[static_cast<size_t>(t + 1)] += off[static_cast<size_t>(t)];
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      int64_t w = off[static_cast<size_t>(t)];
      for (int64_t k = bins.off[t]; k < bins.off[t + 1]; ++k)
        if (mem[bins.gid[k]]) ids[static_cast<size_t>(w++)] = bins.gid[k];
    }
    const Bins sub{off.data(), ids.data(), off[static_cast<size_t>(tiles)]};
    forward_tiles(pk, colors.data_ptr<float>(), nc, sub, grid, nt, out.data_ptr<float>() + s * nc * hw,
                  t_final.data_ptr<float>() + s * hw, nullptr);
  }
  return {out, t_final};
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
    const Tensor& means2d,    // [N, 2]
    const Tensor& conics,     // [N, 3]
    const Tensor& opacities,  // [N]
    const Tensor& colors,     // [N, C]
    const Tensor& offsets,    // [T + 1] int64 from bin
    const Tensor& gids,       // [M] int32 from bin
    const Tensor& t_final,    // [H, W] from forward
    const Tensor& last,       // [H, W] int32 from forward
    const Tensor& d_out,      // [C', H, W], C' <= C
    const Tensor& d_t_final,  // [H, W]
    int64_t num_threads) {
  const int64_t n = check_screen("backward", means2d, conics, opacities);
  check_arg(colors, "backward", "colors", at::kFloat, {n, -1});
  check_arg(t_final, "backward", "t_final", at::kFloat, {-1, -1});
  const int64_t nc_all = colors.size(1), height = t_final.size(0), width = t_final.size(1);
  check_arg(last, "backward", "last", at::kInt, {height, width});
  check_arg(d_out, "backward", "d_out", at::kFloat, {-1, height, width});
  check_arg(d_t_final, "backward", "d_t_final", at::kFloat, {height, width});
  const int64_t nc = d_out.size(0);
  TORCH_CHECK_VALUE(nc <= nc_all, "backward: d_out has ", nc, " channels, more than the ", nc_all, " of colors");
  const TileGrid grid = make_grid("backward", width, height);
  const Bins bins = check_bins("backward", offsets, gids, grid, n, resolve_threads(num_threads));
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
Tensor rasterize_vote(const Tensor& means2d,    // [N, 2]
                      const Tensor& conics,     // [N, 3]
                      const Tensor& opacities,  // [N]
                      const Tensor& offsets,    // [T + 1] int64 from bin
                      const Tensor& gids,       // [M] int32 from bin
                      const Tensor& weights,    // [H, W, K]
                      int64_t num_threads) {
  const int64_t n = check_screen("vote", means2d, conics, opacities);
  check_arg(weights, "vote", "weights", at::kFloat, {-1, -1, -1});
  const int64_t height = weights.size(0), width = weights.size(1), nk = weights.size(2);
  const TileGrid grid = make_grid("vote", width, height);
  const Bins bins = check_bins("vote", offsets, gids, grid, n, resolve_threads(num_threads));
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

// ------------------------------------------------------------------------------------------------------------
// Contribution: (contribution [N] = sum over pixels of alpha * T, bit-identical to vote with weights = 1,
// stoppers [H, W] int32 = the Gaussian at which the pixel's loop stopped (T would have fallen below 1e-4; it
// is not composited there), -1 where the loop ran to the end of the list, and the distinct (tile, stopper)
// pairs as stopper_tiles [P] int32, stopper_ids [P] int32 sorted by (tile, id)). A Gaussian with zero
// contribution changes no pixel when removed, except the pixels it stops (pruning/prune.py verifies those).
// ------------------------------------------------------------------------------------------------------------
std::tuple<Tensor, Tensor, Tensor, Tensor> rasterize_contribution(const Tensor& means2d,    // [N, 2]
                                                  const Tensor& conics,     // [N, 3]
                                                  const Tensor& opacities,  // [N]
                                                  const Tensor& offsets,    // [T + 1] int64 from bin
                                                  const Tensor& gids,       // [M] int32 from bin
                                                  int64_t width, int64_t height, int64_t num_threads) {
  const int64_t n = check_screen("contribution", means2d, conics, opacities);
  const int nt = resolve_threads(num_threads);
  const TileGrid grid = make_grid("contribution", width, height);
  const Bins bins = check_bins("contribution", offsets, gids, grid, n, nt);
  std::vector<Packed> pk;
  pack_gaussians(means2d.data_ptr<float>(), conics.data_ptr<float>(), opacities.data_ptr<float>(), n, nt, pk);
  std::unique_ptr<float[]> rows(new float[static_cast<size_t>(bins.total)]);  // written where used[k]
  std::vector<uint8_t> used(static_cast<size_t>(bins.total), 0);
  Tensor stoppers = at::empty({height, width}, gids.options());
  int32_t* ps = stoppers.data_ptr<int32_t>();
  std::vector<std::vector<int32_t>> pair_ids(nt);  // per thread: distinct stoppers of its tiles, tile by tile
  std::vector<int32_t> tile_thread(grid.count(), -1);
  std::vector<int64_t> tile_begin(grid.count(), 0), tile_end(grid.count(), 0);
#pragma omp parallel num_threads(nt)
  {
    TileState st;
    alignas(32) int32_t stopper[kTilePix];
    int32_t distinct[kTilePix];
    std::vector<int32_t>& ids = pair_ids[omp_get_thread_num()];
    vf8 acc = splat(0.0f);
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < grid.count(); ++tile) {
      std::fill(stopper, stopper + kTilePix, -1);
      if (bins.off[tile] != bins.off[tile + 1]) {
        front_to_back(
            pk.data(), bins, tile, grid, st, [&](int64_t, int32_t) { acc = splat(0.0f); },
            [&](int, vf8 w) { acc += w * 1.0f; },  // the vote's w * weight with weight 1
            [&](int64_t k) {
              rows[k] = hsum(acc);
              used[k] = 1;
            },
            [&](int i, vi8 stop, int32_t g) { storei(stopper + i, stop ? splati(g) : loadi(stopper + i)); });
      }
      const int tx0 = static_cast<int>(tile % grid.gx) * kTile, ty0 = static_cast<int>(tile / grid.gx) * kTile;
      const int tw = std::min(kTile, grid.width - tx0), th = std::min(kTile, grid.height - ty0);
      int nd = 0;
      for (int y = 0; y < th; ++y) {
        std::memcpy(ps + static_cast<int64_t>(ty0 + y) * width + tx0, stopper + y * kTile, sizeof(int32_t) * tw);
        for (int x = 0; x < tw; ++x)
          if (stopper[y * kTile + x] >= 0) distinct[nd++] = stopper[y * kTile + x];
      }
      std::sort(distinct, distinct + nd);
      tile_thread[tile] = omp_get_thread_num();
      tile_begin[tile] = static_cast<int64_t>(ids.size());
      for (int j = 0; j < nd; ++j)
        if (j == 0 || distinct[j] != distinct[j - 1]) ids.push_back(distinct[j]);
      tile_end[tile] = static_cast<int64_t>(ids.size());
    }
  }
  Tensor contrib = at::empty({n}, means2d.options());
  float* pc = contrib.data_ptr<float>();
  reduce_rows(rows.get(), 1, bins.gid, used.data(), bins.total, n, nt, [&](int64_t i, const float* s) { pc[i] = s[0]; });
  int64_t np = 0;
  for (int64_t t = 0; t < grid.count(); ++t) np += tile_end[t] - tile_begin[t];
  Tensor pair_tiles = at::empty({np}, gids.options()), pair_gids = at::empty({np}, gids.options());
  int32_t *pt = pair_tiles.data_ptr<int32_t>(), *pg = pair_gids.data_ptr<int32_t>();
  int64_t w = 0;
  for (int64_t t = 0; t < grid.count(); ++t) {
    if (tile_thread[t] < 0) continue;
    const std::vector<int32_t>& ids = pair_ids[tile_thread[t]];
    for (int64_t j = tile_begin[t]; j < tile_end[t]; ++j, ++w) {
      pt[w] = static_cast<int32_t>(t);
      pg[w] = ids[j];
    }
  }
  return {contrib, stoppers, pair_tiles, pair_gids};
}

// ------------------------------------------------------------------------------------------------------------
// Label-map votes: the vote with weights = one_hot(labels) [H, W, L+1], read from labels [H, W] int32 in 0..L
// instead of L+1 float channels. Each tile's distinct labels are remapped to a local range 0..n_local-1, so an
// intersection keeps n_local accumulators (not L+1): a 16x16 tile rarely holds more than a few labels, even
// when the map has hundreds. Per lane, the one-hot vote adds w * 1 to the pixel's label and w * 0 = +0 to every
// other label; here only the first add is made (x + (+0) = x for every accumulator value that can occur, which
// is never -0), and lanes are summed in the same fixed order: the masses equal the one-hot vote's bit for bit.
// The output is the (intersection, label, mass) list of nonzero masses, then reduced per Gaussian in
// intersection order (dense [N, L+1], or (gaussian, label, mass) triplets sorted by (gaussian, label)).
// ------------------------------------------------------------------------------------------------------------
struct LabelMass {
  int32_t k;      // intersection
  int32_t label;  // 0..L
  float mass;     // sum over the tile's pixels of that label of alpha * T, > 0
};

struct LabelPass {
  std::vector<std::vector<LabelMass>> per_thread;  // masses in the order each thread produced them
  std::vector<int32_t> tile_thread;                 // [T] thread of tile t (-1: no masses)
  std::vector<int64_t> tile_begin, tile_end;        // [T] range in that thread's list
  template <typename F>
  void for_each_in_order(F&& f) const {  // every mass, in intersection order
    for (size_t t = 0; t < tile_thread.size(); ++t) {
      if (tile_thread[t] < 0) continue;
      const std::vector<LabelMass>& v = per_thread[tile_thread[t]];
      for (int64_t j = tile_begin[t]; j < tile_end[t]; ++j) f(v[j]);
    }
  }
};

// labels: [H, W] int32 in 0..num_labels (checked here, before any parallel region).
int64_t check_labels(const char* op, const Tensor& labels, int64_t num_labels, int nt) {
  check_arg(labels, op, "labels", at::kInt, {-1, -1});
  TORCH_CHECK_VALUE(num_labels >= 0 && num_labels < (int64_t(1) << 30), op, ": num_labels must lie in 0..2^30, got ",
              num_labels);
  const int32_t* lab = labels.data_ptr<int32_t>();
  const int64_t hw = labels.numel();
  int64_t bad = 0;
#pragma omp parallel for num_threads(nt) schedule(static) reduction(+ : bad)
  for (int64_t p = 0; p < hw; ++p) bad += (lab[p] < 0 || lab[p] > num_labels) ? 1 : 0;
  TORCH_CHECK_VALUE(bad == 0, op, ": ", bad, " label(s) outside 0..num_labels = ", num_labels);
  return num_labels;
}

LabelPass label_pass(const std::vector<Packed>& pk, const Bins& bins, const TileGrid& grid, const int32_t* lab,
                     int64_t num_labels, int nt) {
  LabelPass out;
  const int64_t ntiles = grid.count();
  out.tile_thread.assign(ntiles, -1);
  out.tile_begin.assign(ntiles, 0);
  out.tile_end.assign(ntiles, 0);
  out.per_thread.resize(nt);
#pragma omp parallel num_threads(nt)
  {
    const int tid = omp_get_thread_num();
    std::vector<LabelMass>& buf = out.per_thread[tid];
    TileState st;
    alignas(32) int32_t loc[kTilePix];             // local label of each tile pixel
    std::vector<int32_t> stamp(num_labels + 1, -1);  // label -> tile that last saw it (no clearing per tile)
    std::vector<int32_t> local_of(num_labels + 1, 0);
    std::vector<int32_t> labels_here;                // local index -> label, ascending
    std::vector<vf8> acc;
#pragma omp for schedule(dynamic, 1)
    for (int64_t tile = 0; tile < ntiles; ++tile) {
      if (bins.off[tile] == bins.off[tile + 1]) continue;
      const int tx0 = static_cast<int>(tile % grid.gx) * kTile, ty0 = static_cast<int>(tile / grid.gx) * kTile;
      const int tw = std::min(kTile, grid.width - tx0), th = std::min(kTile, grid.height - ty0);
      labels_here.clear();
      for (int y = 0; y < th; ++y)
        for (int x = 0; x < tw; ++x) {
          const int32_t l = lab[static_cast<int64_t>(ty0 + y) * grid.width + tx0 + x];
          if (stamp[l] != static_cast<int32_t>(tile)) {
            stamp[l] = static_cast<int32_t>(tile);
            labels_here.push_back(l);
          }
        }
      std::sort(labels_here.begin(), labels_here.end());
      for (size_t j = 0; j < labels_here.size(); ++j) local_of[labels_here[j]] = static_cast<int32_t>(j);
      std::fill(loc, loc + kTilePix, 0);  // pixels outside the image: w = 0 there, any label will do
      for (int y = 0; y < th; ++y)
        for (int x = 0; x < tw; ++x)
          loc[y * kTile + x] = local_of[lab[static_cast<int64_t>(ty0 + y) * grid.width + tx0 + x]];
      const int64_t nloc = static_cast<int64_t>(labels_here.size());
      acc.resize(nloc);
      out.tile_thread[tile] = tid;
      out.tile_begin[tile] = static_cast<int64_t>(buf.size());
      front_to_back(
          pk.data(), bins, tile, grid, st, [&](int64_t, int32_t) { std::fill(acc.begin(), acc.end(), splat(0.0f)); },
          [&](int i, vf8 w) {
            const vi8 lv = loadi(loc + i);
            if (!any_lane(lv != splati(lv[0]))) {
              acc[lv[0]] += w;  // one label in the chunk
            } else {
              for (int l = 0; l < kLanes; ++l) acc[lv[l]][l] += w[l];
            }
          },
          [&](int64_t k) {
            for (int64_t j = 0; j < nloc; ++j) {
              const float mass = hsum(acc[j]);
              if (mass != 0.0f) buf.push_back({static_cast<int32_t>(k), labels_here[j], mass});
            }
          });
      out.tile_end[tile] = static_cast<int64_t>(buf.size());
    }
  }
  return out;
}

// The checks and the tile pass shared by the dense and the sparse label votes.
struct LabelVote {
  int64_t n;
  int nt;
  Bins bins;
  LabelPass pass;
};

LabelVote checked_label_pass(const char* op, const Tensor& means2d, const Tensor& conics, const Tensor& opacities,
                             const Tensor& offsets, const Tensor& gids, const Tensor& labels, int64_t num_labels,
                             int64_t num_threads) {
  const int64_t n = check_screen(op, means2d, conics, opacities);
  const int nt = resolve_threads(num_threads);
  check_labels(op, labels, num_labels, nt);
  const TileGrid grid = make_grid(op, labels.size(1), labels.size(0));
  const Bins bins = check_bins(op, offsets, gids, grid, n, nt);
  std::vector<Packed> pk;
  pack_gaussians(means2d.data_ptr<float>(), conics.data_ptr<float>(), opacities.data_ptr<float>(), n, nt, pk);
  return {n, nt, bins, label_pass(pk, bins, grid, labels.data_ptr<int32_t>(), num_labels, nt)};
}

// votes [N, L+1] float32 from labels [H, W] int32: equal to vote(..., weights = one_hot(labels, L+1)).
Tensor rasterize_vote_labels(const Tensor& means2d,    // [N, 2]
                             const Tensor& conics,     // [N, 3]
                             const Tensor& opacities,  // [N]
                             const Tensor& offsets,    // [T + 1] int64 from bin
                             const Tensor& gids,       // [M] int32 from bin
                             const Tensor& labels,     // [H, W] int32 in 0..num_labels
                             int64_t num_labels, int64_t num_threads) {
  const LabelVote lv =
      checked_label_pass("vote_labels", means2d, conics, opacities, offsets, gids, labels, num_labels, num_threads);
  const int64_t n = lv.n, nk = num_labels + 1;
  const int nt = lv.nt;
  const Bins& bins = lv.bins;
  const LabelPass& pass = lv.pass;
  Tensor votes = at::zeros({n, nk}, means2d.options());
  float* pv = votes.data_ptr<float>();
  // Each thread adds the masses of its own Gaussian range, in intersection order: the dense vote's sum order.
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
    const int64_t g0 = n * t / tn, g1 = n * (t + 1) / tn;
    pass.for_each_in_order([&](const LabelMass& e) {
      const int64_t g = bins.gid[e.k];
      if (g >= g0 && g < g1) pv[g * nk + e.label] += e.mass;
    });
  }
  return votes;
}

// The nonzero entries of vote_labels as (gaussian [P] int32, label [P] int32, mass [P] float32), sorted by
// (gaussian, label): no [N, L+1] array, for label maps with hundreds of labels. Bit-identical to the dense entries.
std::tuple<Tensor, Tensor, Tensor> rasterize_vote_labels_sparse(const Tensor& means2d,    // [N, 2]
                                                                const Tensor& conics,     // [N, 3]
                                                                const Tensor& opacities,  // [N]
                                                                const Tensor& offsets,    // [T + 1] int64
                                                                const Tensor& gids,       // [M] int32
                                                                const Tensor& labels,     // [H, W] int32
                                                                int64_t num_labels, int64_t num_threads) {
  const LabelVote lv = checked_label_pass("vote_labels_sparse", means2d, conics, opacities, offsets, gids, labels,
                                          num_labels, num_threads);
  const int64_t n = lv.n;
  const int nt = lv.nt;
  const Bins& bins = lv.bins;
  const LabelPass& pass = lv.pass;

  // Group the masses by Gaussian (counting sort; each thread handles its own Gaussian range and keeps the
  // intersection order), then per Gaussian: stable sort by label, sum equal labels in order, compact.
  std::vector<int64_t> per_g(n + 1, 0);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
    const int64_t g0 = n * t / tn, g1 = n * (t + 1) / tn;
    pass.for_each_in_order([&](const LabelMass& e) {
      const int64_t g = bins.gid[e.k];
      if (g >= g0 && g < g1) per_g[g + 1]++;
    });
  }
  for (int64_t g = 0; g < n; ++g) per_g[g + 1] += per_g[g];
  std::vector<std::pair<int32_t, float>> grouped(static_cast<size_t>(per_g[n]));  // (label, mass)
  std::vector<int64_t> distinct(n + 1, 0);
#pragma omp parallel num_threads(nt)
  {
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
    const int64_t g0 = n * t / tn, g1 = n * (t + 1) / tn;
    std::vector<int64_t> fill(per_g.begin() + g0, per_g.begin() + g1);
    pass.for_each_in_order([&](const LabelMass& e) {
      const int64_t g = bins.gid[e.k];
      if (g >= g0 && g < g1) grouped[fill[g - g0]++] = {e.label, e.mass};
    });
    for (int64_t g = g0; g < g1; ++g) {
      auto b = grouped.begin() + per_g[g], e = grouped.begin() + per_g[g + 1];
      std::stable_sort(b, e, [](const std::pair<int32_t, float>& x, const std::pair<int32_t, float>& y) {
        return x.first < y.first;
      });
      int64_t w = per_g[g];
      for (int64_t r = per_g[g]; r < per_g[g + 1]; ++r) {
        if (w > per_g[g] && grouped[w - 1].first == grouped[r].first) {
          grouped[w - 1].second += grouped[r].second;
        } else {
          grouped[w++] = grouped[r];
        }
      }
      distinct[g + 1] = w - per_g[g];
    }
  }
  for (int64_t g = 0; g < n; ++g) distinct[g + 1] += distinct[g];
  const int64_t np = distinct[n];
  Tensor out_g = at::empty({np}, gids.options());
  Tensor out_l = at::empty({np}, gids.options());
  Tensor out_m = at::empty({np}, means2d.options());
  int32_t *og = out_g.data_ptr<int32_t>(), *ol = out_l.data_ptr<int32_t>();
  float* om = out_m.data_ptr<float>();
#pragma omp parallel for num_threads(nt) schedule(static, 4096)
  for (int64_t g = 0; g < n; ++g) {
    for (int64_t j = 0; j < distinct[g + 1] - distinct[g]; ++j) {
      const std::pair<int32_t, float>& e = grouped[per_g[g] + j];
      og[distinct[g] + j] = static_cast<int32_t>(g);
      ol[distinct[g] + j] = e.first;
      om[distinct[g] + j] = e.second;
    }
  }
  return {out_g, out_l, out_m};
}

}  // namespace

TORCH_LIBRARY(gs_cpu_rasterizer, m) {
  m.def("bin(Tensor means2d, Tensor conics, Tensor opacities, Tensor radii, Tensor depths, int width, int height,"
        " bool tight, Tensor? tile_mask, int num_threads) -> (Tensor, Tensor, Tensor)",
        &bin_gaussians);
  m.def("forward(Tensor means2d, Tensor conics, Tensor opacities, Tensor colors, Tensor tile_offsets,"
        " Tensor isect_gids, int width, int height, int num_threads) -> (Tensor, Tensor, Tensor)",
        &rasterize_forward);
  m.def("forward_subsets(Tensor means2d, Tensor conics, Tensor opacities, Tensor colors, Tensor tile_offsets,"
        " Tensor isect_gids, Tensor members, int width, int height, int num_threads) -> (Tensor, Tensor)",
        &rasterize_forward_subsets);
  m.def("backward(Tensor means2d, Tensor conics, Tensor opacities, Tensor colors, Tensor tile_offsets,"
        " Tensor isect_gids, Tensor t_final, Tensor last, Tensor d_out, Tensor d_t_final, int num_threads)"
        " -> (Tensor, Tensor, Tensor, Tensor)",
        &rasterize_backward);
  m.def("vote(Tensor means2d, Tensor conics, Tensor opacities, Tensor tile_offsets, Tensor isect_gids,"
        " Tensor weights, int num_threads) -> Tensor",
        &rasterize_vote);
  m.def("contribution(Tensor means2d, Tensor conics, Tensor opacities, Tensor tile_offsets, Tensor isect_gids,"
        " int width, int height, int num_threads) -> (Tensor, Tensor, Tensor, Tensor)",
        &rasterize_contribution);
  m.def("vote_labels(Tensor means2d, Tensor conics, Tensor opacities, Tensor tile_offsets, Tensor isect_gids,"
        " Tensor labels, int num_labels, int num_threads) -> Tensor",
        &rasterize_vote_labels);
  m.def("vote_labels_sparse(Tensor means2d, Tensor conics, Tensor opacities, Tensor tile_offsets,"
        " Tensor isect_gids, Tensor labels, int num_labels, int num_threads) -> (Tensor, Tensor, Tensor)",
        &rasterize_vote_labels_sparse);
}
