// Per-Gaussian EWA projection for one camera, forward and backward, in float32 with OpenMP.
//
// The same computation as gaussian_renderer/projection.py (the plain-torch version, which stays the reference
// and the float64 path): there every step is an elementwise op on [N] tensors, so a training iteration spent
// ~40 ms in a few hundred small torch kernels and their autograd nodes at 100k Gaussians; here it is one pass.
// Conventions (Inria's, see ../shared/NOTES.md): x/z and y/z clamped to the frustum margin before the Jacobian
// (the clamp's gradient is torch.clamp's: passed where lo <= v <= hi), 2D covariance dilated by 0.3 px^2,
// radius ceil(3 sqrt(lambda_max)) with the max(0.1, .) guard, z <= near culled (x = y = 0, z = 1 inside, so the
// values stay finite and x, y, z get no gradient), means2d in the integer-centred pixel frame.
// The camera is a constant (no gradients w.r.t. the pose or intrinsics). project_forward's cull flag skips the
// rotation / covariance of Gaussians whose radius bound (cull_bound) already leaves Inria's tile rect empty.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "common.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

using at::Tensor;

struct Cam {
  float W[3][3], t[3];                 // world-to-camera rotation and translation
  float fx, fy, cx, cy;                // pinhole intrinsics
  float lnx, lpx, lny, lpy;            // clamp limits of x/z and y/z (all positive)
  float near;
};

Cam make_cam(const std::vector<double>& view, const std::vector<double>& intr, double near) {
  TORCH_CHECK_VALUE(view.size() == 12, "project: view must hold 12 numbers (3x4 row-major world-to-camera)");
  TORCH_CHECK_VALUE(intr.size() == 8, "project: intrinsics must be fx, fy, cx, cy and four clamp limits");
  Cam c;
  for (int i = 0; i < 3; ++i) {
    for (int j = 0; j < 3; ++j) c.W[i][j] = static_cast<float>(view[4 * i + j]);
    c.t[i] = static_cast<float>(view[4 * i + 3]);
  }
  c.fx = static_cast<float>(intr[0]);
  c.fy = static_cast<float>(intr[1]);
  c.cx = static_cast<float>(intr[2]);
  c.cy = static_cast<float>(intr[3]);
  c.lnx = static_cast<float>(intr[4]);
  c.lpx = static_cast<float>(intr[5]);
  c.lny = static_cast<float>(intr[6]);
  c.lpy = static_cast<float>(intr[7]);
  c.near = static_cast<float>(near);
  return c;
}

using gs_cpu::check_arg;

// Everything the backward needs from the forward of one Gaussian (recomputed there, never stored).
struct Fwd {
  float p[3];            // camera-space point (before the cull substitution)
  bool valid;            // z > near
  float x, y, iz;        // culled: 0, 0, 1
  float ux, uy, sx, sy;  // x/z, y/z and their clamped values
  float j0[3], j1[3];    // rows of J W
  float qn[4], inv_n;    // normalised quaternion (w, x, y, z) and 1 / |q|
  float R[3][3];
  float s[3];
  float t0[3], t1[3];    // (J W R)[row, k]
  float u0[3], u1[3];    // (J W R diag(s))[row, k]
  float a, b, c, inv_det;
};

// The camera part of forward_one: camera-space point, cull substitution and the rows of J W (cheap; enough to
// bound the screen radius, see cull_bound).
inline void forward_camera(const Cam& cam, const float* m, Fwd& f) {
  for (int i = 0; i < 3; ++i) f.p[i] = ((cam.W[i][0] * m[0] + cam.W[i][1] * m[1]) + cam.W[i][2] * m[2]) + cam.t[i];
  f.valid = f.p[2] > cam.near;
  const float z = f.valid ? f.p[2] : 1.0f;
  f.x = f.valid ? f.p[0] : 0.0f;
  f.y = f.valid ? f.p[1] : 0.0f;
  f.iz = 1.0f / z;
  f.ux = f.x * f.iz;
  f.uy = f.y * f.iz;
  f.sx = std::min(std::max(f.ux, -cam.lnx), cam.lpx);
  f.sy = std::min(std::max(f.uy, -cam.lny), cam.lpy);
  const float fxz = cam.fx * f.iz, fyz = cam.fy * f.iz;
  for (int k = 0; k < 3; ++k) {
    f.j0[k] = fxz * (cam.W[0][k] - f.sx * cam.W[2][k]);
    f.j1[k] = fyz * (cam.W[1][k] - f.sy * cam.W[2][k]);
  }
}

// The rest: rotation, 2D covariance (a, b, c) and its inverse determinant.
inline void forward_shape(const float* q, const float* s, Fwd& f) {
  f.inv_n = 1.0f / std::sqrt(((q[0] * q[0] + q[1] * q[1]) + q[2] * q[2]) + q[3] * q[3]);
  for (int i = 0; i < 4; ++i) f.qn[i] = q[i] * f.inv_n;
  const float w = f.qn[0], x = f.qn[1], y = f.qn[2], zq = f.qn[3];
  const float xx = x * x, yy = y * y, zz = zq * zq, xy = x * y, xz = x * zq, yz = y * zq;
  const float wx = w * x, wy = w * y, wz = w * zq;
  f.R[0][0] = 1.0f - 2.0f * (yy + zz);
  f.R[0][1] = 2.0f * (xy - wz);
  f.R[0][2] = 2.0f * (xz + wy);
  f.R[1][0] = 2.0f * (xy + wz);
  f.R[1][1] = 1.0f - 2.0f * (xx + zz);
  f.R[1][2] = 2.0f * (yz - wx);
  f.R[2][0] = 2.0f * (xz - wy);
  f.R[2][1] = 2.0f * (yz + wx);
  f.R[2][2] = 1.0f - 2.0f * (xx + yy);
  for (int k = 0; k < 3; ++k) {
    f.s[k] = s[k];
    f.t0[k] = (f.j0[0] * f.R[0][k] + f.j0[1] * f.R[1][k]) + f.j0[2] * f.R[2][k];
    f.t1[k] = (f.j1[0] * f.R[0][k] + f.j1[1] * f.R[1][k]) + f.j1[2] * f.R[2][k];
    f.u0[k] = f.t0[k] * s[k];
    f.u1[k] = f.t1[k] * s[k];
  }
  f.a = ((f.u0[0] * f.u0[0] + f.u0[1] * f.u0[1]) + f.u0[2] * f.u0[2]) + 0.3f;
  f.b = (f.u0[0] * f.u1[0] + f.u0[1] * f.u1[1]) + f.u0[2] * f.u1[2];
  f.c = ((f.u1[0] * f.u1[0] + f.u1[1] * f.u1[1]) + f.u1[2] * f.u1[2]) + 0.3f;
  f.inv_det = 1.0f / (f.a * f.c - f.b * f.b);
}

inline void forward_one(const Cam& cam, const float* m, const float* q, const float* s, Fwd& f) {
  forward_camera(cam, m, f);
  forward_shape(q, s, f);
}

// Frustum cull before the shape work: an upper bound on Inria's radius from the camera part alone. The 2D
// covariance is U U^T + 0.3 I with U = (J W) R diag(s), so a + c <= (|j0|^2 + |j1|^2) max(s)^2 + 0.6 and
// lambda_max <= a + c + sqrt(0.1) whenever the radius is nonzero (det > 0); margins cover the float rounding.
// If even that radius gives an empty tile rect (Inria's getRect, monotone in the radius), the Gaussian touches
// no tile whatever its shape: it gets radius 0 without its rotation and covariance being computed.
inline bool cull_bound(const Fwd& f, const float* s, float mx, float my, int gx, int gy) {
  if (!f.valid) return true;
  double n2 = 0.0;
  for (int k = 0; k < 3; ++k) n2 += static_cast<double>(f.j0[k]) * f.j0[k] + static_cast<double>(f.j1[k]) * f.j1[k];
  const double smax = std::max({std::fabs(s[0]), std::fabs(s[1]), std::fabs(s[2])});
  const double lam = (n2 * smax * smax * (1.0 + 1e-5) + 0.6 + 0.32) * 1.0001;
  const double r_ub = std::ceil(3.0 * std::sqrt(lam)) + 1.0;
  if (!(r_ub < 1e7) || !std::isfinite(mx) || !std::isfinite(my)) return false;  // let the full path decide
  const float r = static_cast<float>(r_ub);
  auto cl = [](float v, int g) {
    v = v < 0.0f ? 0.0f : v;
    v = v > static_cast<float>(g) ? static_cast<float>(g) : v;
    return static_cast<int32_t>(v);
  };
  const int32_t x0 = cl((mx - r) / 16, gx), x1 = cl((mx + r + 15) / 16, gx);
  const int32_t y0 = cl((my - r) / 16, gy), y1 = cl((my + r + 15) / 16, gy);
  return x1 <= x0 || y1 <= y0;
}

using gs_cpu::resolve_threads;

// (means2d [N, 2], conics [N, 3], depths [N], radii [N] int32; 0 = culled or degenerate). cull: Gaussians that
// provably touch no tile of the width x height image (cull_bound) get radius 0 and conic 0 without the shape
// work; every other output is the same as without cull, and so is everything a render computes from them.
std::tuple<Tensor, Tensor, Tensor, Tensor> project_forward(const Tensor& means,   // [N, 3]
                                                           const Tensor& quats,   // [N, 4] wxyz, any norm
                                                           const Tensor& scales,  // [N, 3] activated
                                                           std::vector<double> view, std::vector<double> intr,
                                                           double near, int64_t width, int64_t height, bool cull,
                                                           int64_t num_threads) {
  check_arg(means, "project_forward", "means", at::kFloat, {-1, 3});
  const int64_t n = means.size(0);
  check_arg(quats, "project_forward", "quats", at::kFloat, {n, 4});
  check_arg(scales, "project_forward", "scales", at::kFloat, {n, 3});
  TORCH_CHECK_VALUE(width > 0 && height > 0, "project_forward: width and height must be positive, got ", width, "x",
              height);
  const Cam cam = make_cam(view, intr, near);
  const int nt = resolve_threads(num_threads);
  const int gx = static_cast<int>((width + 15) / 16), gy = static_cast<int>((height + 15) / 16);
  Tensor m2 = at::empty({n, 2}, means.options());
  Tensor con = at::empty({n, 3}, means.options());
  Tensor dep = at::empty({n}, means.options());
  Tensor rad = at::empty({n}, means.options().dtype(at::kInt));
  const float *pm = means.data_ptr<float>(), *pq = quats.data_ptr<float>(), *ps = scales.data_ptr<float>();
  float *om = m2.data_ptr<float>(), *oc = con.data_ptr<float>(), *od = dep.data_ptr<float>();
  int32_t* orad = rad.data_ptr<int32_t>();
#pragma omp parallel for num_threads(nt) schedule(static, 2048)
  for (int64_t i = 0; i < n; ++i) {
    Fwd f;
    forward_camera(cam, pm + 3 * i, f);
    const float mx = (cam.fx * f.x) * f.iz + (cam.cx - 0.5f);
    const float my = (cam.fy * f.y) * f.iz + (cam.cy - 0.5f);
    om[2 * i] = mx;
    om[2 * i + 1] = my;
    od[i] = f.p[2];
    // a centre inside the image always gets a tile of Inria's rect (r >= 1): only the others can be culled
    const bool inside = f.valid && mx >= 0.0f && mx < static_cast<float>(width) && my >= 0.0f &&
                        my < static_cast<float>(height);
    if (cull && !inside && cull_bound(f, ps + 3 * i, mx, my, gx, gy)) {
      oc[3 * i] = oc[3 * i + 1] = oc[3 * i + 2] = 0.0f;
      orad[i] = 0;
      continue;
    }
    forward_shape(pq + 4 * i, ps + 3 * i, f);
    oc[3 * i] = f.c * f.inv_det;
    oc[3 * i + 1] = -f.b * f.inv_det;
    oc[3 * i + 2] = f.a * f.inv_det;
    const float det = f.a * f.c - f.b * f.b;
    const float mid = 0.5f * (f.a + f.c);
    const float lam = mid + std::sqrt(std::max(mid * mid - det, 0.1f));
    const float r = std::min(std::ceil(3.0f * std::sqrt(lam)), static_cast<float>(1 << 24));
    const bool ok = f.valid && std::isfinite(r) && std::isfinite(mx) && std::isfinite(my) && f.inv_det > 0.0f;
    orad[i] = ok ? static_cast<int32_t>(r) : 0;
  }
  return {m2, con, dep, rad};
}

// (d_means [N, 3], d_quats [N, 4], d_scales [N, 3]) from the gradients of means2d, conics and depths.
std::tuple<Tensor, Tensor, Tensor> project_backward(const Tensor& means,      // [N, 3]
                                                    const Tensor& quats,      // [N, 4]
                                                    const Tensor& scales,     // [N, 3]
                                                    std::vector<double> view, std::vector<double> intr,
                                                    double near,
                                                    const Tensor& d_means2d,  // [N, 2]
                                                    const Tensor& d_conics,   // [N, 3]
                                                    const Tensor& d_depths,   // [N]
                                                    int64_t num_threads) {
  check_arg(means, "project_backward", "means", at::kFloat, {-1, 3});
  const int64_t n = means.size(0);
  check_arg(quats, "project_backward", "quats", at::kFloat, {n, 4});
  check_arg(scales, "project_backward", "scales", at::kFloat, {n, 3});
  check_arg(d_means2d, "project_backward", "d_means2d", at::kFloat, {n, 2});
  check_arg(d_conics, "project_backward", "d_conics", at::kFloat, {n, 3});
  check_arg(d_depths, "project_backward", "d_depths", at::kFloat, {n});
  const Cam cam = make_cam(view, intr, near);
  const int nt = resolve_threads(num_threads);
  Tensor dm = at::empty({n, 3}, means.options());
  Tensor dq = at::empty({n, 4}, means.options());
  Tensor ds = at::empty({n, 3}, means.options());
  const float *pm = means.data_ptr<float>(), *pq = quats.data_ptr<float>(), *ps = scales.data_ptr<float>();
  const float *gm = d_means2d.data_ptr<float>(), *gc = d_conics.data_ptr<float>(), *gd = d_depths.data_ptr<float>();
  float *odm = dm.data_ptr<float>(), *odq = dq.data_ptr<float>(), *ods = ds.data_ptr<float>();
#pragma omp parallel for num_threads(nt) schedule(static, 2048)
  for (int64_t i = 0; i < n; ++i) {
    Fwd f;
    forward_one(cam, pm + 3 * i, pq + 4 * i, ps + 3 * i, f);
    const float g0 = gc[3 * i], g1 = gc[3 * i + 1], g2 = gc[3 * i + 2];
    // conic = (c, -b, a) / det
    const float d_inv_det = (g0 * f.c - g1 * f.b) + g2 * f.a;
    const float d_det = -d_inv_det * f.inv_det * f.inv_det;
    const float da = g2 * f.inv_det + d_det * f.c;
    const float dc = g0 * f.inv_det + d_det * f.a;
    const float db = -g1 * f.inv_det - 2.0f * f.b * d_det;
    // a = |u0|^2, b = u0 . u1, c = |u1|^2 (+ dilation)
    float dj0[3] = {0, 0, 0}, dj1[3] = {0, 0, 0}, dR[3][3];
    for (int k = 0; k < 3; ++k) {
      const float du0 = 2.0f * f.u0[k] * da + f.u1[k] * db;
      const float du1 = 2.0f * f.u1[k] * dc + f.u0[k] * db;
      ods[3 * i + k] = du0 * f.t0[k] + du1 * f.t1[k];
      const float dt0 = du0 * f.s[k], dt1 = du1 * f.s[k];
      for (int m = 0; m < 3; ++m) {
        dj0[m] += dt0 * f.R[m][k];
        dj1[m] += dt1 * f.R[m][k];
        dR[m][k] = dt0 * f.j0[m] + dt1 * f.j1[m];
      }
    }
    // R(normalised quaternion), then through the normalisation
    const float w = f.qn[0], x = f.qn[1], y = f.qn[2], z = f.qn[3];
    const float dw = 2.0f * (-z * dR[0][1] + y * dR[0][2] + z * dR[1][0] - x * dR[1][2] - y * dR[2][0] + x * dR[2][1]);
    const float dx = 2.0f * (y * dR[0][1] + z * dR[0][2] + y * dR[1][0] - 2.0f * x * dR[1][1] - w * dR[1][2] +
                             z * dR[2][0] + w * dR[2][1] - 2.0f * x * dR[2][2]);
    const float dy = 2.0f * (-2.0f * y * dR[0][0] + x * dR[0][1] + w * dR[0][2] + x * dR[1][0] + z * dR[1][2] -
                             w * dR[2][0] + z * dR[2][1] - 2.0f * y * dR[2][2]);
    const float dz = 2.0f * (-2.0f * z * dR[0][0] - w * dR[0][1] + x * dR[0][2] + w * dR[1][0] - 2.0f * z * dR[1][1] +
                             y * dR[1][2] + x * dR[2][0] + y * dR[2][1]);
    const float dot = w * dw + x * dx + y * dy + z * dz;
    odq[4 * i] = f.inv_n * (dw - w * dot);
    odq[4 * i + 1] = f.inv_n * (dx - x * dot);
    odq[4 * i + 2] = f.inv_n * (dy - y * dot);
    odq[4 * i + 3] = f.inv_n * (dz - z * dot);
    // J W rows: j0 = fx/z (W0 - sx W2), j1 = fy/z (W1 - sy W2)
    float dfxz = 0.0f, dfyz = 0.0f, dsx = 0.0f, dsy = 0.0f;
    const float fxz = cam.fx * f.iz, fyz = cam.fy * f.iz;
    for (int k = 0; k < 3; ++k) {
      dfxz += dj0[k] * (cam.W[0][k] - f.sx * cam.W[2][k]);
      dfyz += dj1[k] * (cam.W[1][k] - f.sy * cam.W[2][k]);
      dsx -= fxz * dj0[k] * cam.W[2][k];
      dsy -= fyz * dj1[k] * cam.W[2][k];
    }
    const float dux = (f.ux >= -cam.lnx && f.ux <= cam.lpx) ? dsx : 0.0f;
    const float duy = (f.uy >= -cam.lny && f.uy <= cam.lpy) ? dsy : 0.0f;
    const float gmx = gm[2 * i], gmy = gm[2 * i + 1];
    const float dxc = dux * f.iz + gmx * cam.fx * f.iz;
    const float dyc = duy * f.iz + gmy * cam.fy * f.iz;
    const float d_iz = cam.fx * dfxz + cam.fy * dfyz + dux * f.x + duy * f.y + gmx * cam.fx * f.x + gmy * cam.fy * f.y;
    const float dzc = -d_iz * f.iz * f.iz;
    float dp[3] = {f.valid ? dxc : 0.0f, f.valid ? dyc : 0.0f, (f.valid ? dzc : 0.0f) + gd[i]};
    for (int j = 0; j < 3; ++j)
      odm[3 * i + j] = (cam.W[0][j] * dp[0] + cam.W[1][j] * dp[1]) + cam.W[2][j] * dp[2];
  }
  return {dm, dq, ds};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(gs_cpu_rasterizer, m) {
  m.def("project_forward(Tensor means, Tensor quats, Tensor scales, float[] view, float[] intrinsics, float near,"
        " int width, int height, bool cull, int num_threads) -> (Tensor, Tensor, Tensor, Tensor)",
        &project_forward);
  m.def("project_backward(Tensor means, Tensor quats, Tensor scales, float[] view, float[] intrinsics, float near,"
        " Tensor d_means2d, Tensor d_conics, Tensor d_depths, int num_threads) -> (Tensor, Tensor, Tensor)",
        &project_backward);
}
