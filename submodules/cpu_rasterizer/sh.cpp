// View-dependent colour from spherical harmonics (degree <= 3), forward and backward, float32 with OpenMP.
//
// colour = max(0, sum_k basis_k(dir) sh_k + 0.5), dir = normalise(mean - camera centre): Inria's
// computeColorFromSH and its backward. utils/sh.py (plain torch) is the reference and the float64 path; in
// torch this costs ~30 ms per training iteration at 100k Gaussians (strided [N, 3, 16] products, their
// autograd and the cat of the DC and rest coefficients); here one pass reads the DC and rest tensors in place.

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

constexpr float C0 = 0.28209479177387814f;
constexpr float C1 = 0.4886025119029199f;
constexpr float C2[5] = {1.0925484305920792f, -1.0925484305920792f, 0.31539156525252005f, -1.0925484305920792f,
                         0.5462742152960396f};
constexpr float C3[7] = {-0.5900435899266435f, 2.890611442640554f, -0.4570457994644658f, 0.3731763325901154f,
                         -0.4570457994644658f, 1.445305721320277f, -0.5900435899266435f};

// Basis values b[k] and, if d != nullptr, their derivatives d[k] = (db/dx, db/dy, db/dz) for k < (deg+1)^2.
inline void basis(int deg, float x, float y, float z, float* b, float (*d)[3]) {
  b[0] = C0;
  if (d) d[0][0] = d[0][1] = d[0][2] = 0.0f;
  if (deg < 1) return;
  b[1] = -C1 * y;
  b[2] = C1 * z;
  b[3] = -C1 * x;
  if (d) {
    d[1][0] = 0.0f, d[1][1] = -C1, d[1][2] = 0.0f;
    d[2][0] = 0.0f, d[2][1] = 0.0f, d[2][2] = C1;
    d[3][0] = -C1, d[3][1] = 0.0f, d[3][2] = 0.0f;
  }
  if (deg < 2) return;
  const float xx = x * x, yy = y * y, zz = z * z, xy = x * y, yz = y * z, xz = x * z;
  b[4] = C2[0] * xy;
  b[5] = C2[1] * yz;
  b[6] = C2[2] * (2.0f * zz - xx - yy);
  b[7] = C2[3] * xz;
  b[8] = C2[4] * (xx - yy);
  if (d) {
    d[4][0] = C2[0] * y, d[4][1] = C2[0] * x, d[4][2] = 0.0f;
    d[5][0] = 0.0f, d[5][1] = C2[1] * z, d[5][2] = C2[1] * y;
    d[6][0] = -2.0f * C2[2] * x, d[6][1] = -2.0f * C2[2] * y, d[6][2] = 4.0f * C2[2] * z;
    d[7][0] = C2[3] * z, d[7][1] = 0.0f, d[7][2] = C2[3] * x;
    d[8][0] = 2.0f * C2[4] * x, d[8][1] = -2.0f * C2[4] * y, d[8][2] = 0.0f;
  }
  if (deg < 3) return;
  b[9] = C3[0] * y * (3.0f * xx - yy);
  b[10] = C3[1] * xy * z;
  b[11] = C3[2] * y * (4.0f * zz - xx - yy);
  b[12] = C3[3] * z * (2.0f * zz - 3.0f * xx - 3.0f * yy);
  b[13] = C3[4] * x * (4.0f * zz - xx - yy);
  b[14] = C3[5] * z * (xx - yy);
  b[15] = C3[6] * x * (xx - 3.0f * yy);
  if (d) {
    d[9][0] = C3[0] * 6.0f * xy, d[9][1] = C3[0] * (3.0f * xx - 3.0f * yy), d[9][2] = 0.0f;
    d[10][0] = C3[1] * yz, d[10][1] = C3[1] * xz, d[10][2] = C3[1] * xy;
    d[11][0] = C3[2] * -2.0f * xy, d[11][1] = C3[2] * (4.0f * zz - xx - 3.0f * yy), d[11][2] = C3[2] * 8.0f * yz;
    d[12][0] = C3[3] * -6.0f * xz, d[12][1] = C3[3] * -6.0f * yz, d[12][2] = C3[3] * (6.0f * zz - 3.0f * xx - 3.0f * yy);
    d[13][0] = C3[4] * (4.0f * zz - 3.0f * xx - yy), d[13][1] = C3[4] * -2.0f * xy, d[13][2] = C3[4] * 8.0f * xz;
    d[14][0] = C3[5] * 2.0f * xz, d[14][1] = C3[5] * -2.0f * yz, d[14][2] = C3[5] * (xx - yy);
    d[15][0] = C3[6] * (3.0f * xx - 3.0f * yy), d[15][1] = C3[6] * -6.0f * xy, d[15][2] = 0.0f;
  }
}

struct Inputs {
  int64_t n, rest;  // Gaussians, rest coefficients per channel ((max_deg+1)^2 - 1)
  int deg, nt;
  const float *means, *dc, *rst;
  float cam[3];
};

Inputs check(const Tensor& means, const Tensor& dc, const Tensor& rest, const std::vector<double>& centre,
             int64_t degree, int64_t num_threads) {
  using gs_cpu::check_arg;
  check_arg(means, "sh", "means", at::kFloat, {-1, 3});        // [N, 3]
  const int64_t n = means.size(0);
  check_arg(dc, "sh", "dc", at::kFloat, {n, 1, 3});            // [N, 1, 3]
  check_arg(rest, "sh", "rest", at::kFloat, {n, -1, 3});       // [N, R, 3]
  TORCH_CHECK_VALUE(degree >= 0 && degree <= 3 && (degree + 1) * (degree + 1) - 1 <= rest.size(1),
              "sh: degree must be 0..3 and covered by rest");
  TORCH_CHECK_VALUE(centre.size() == 3, "sh: centre must hold 3 numbers");
  Inputs in;
  in.n = n;
  in.rest = rest.size(1);
  in.deg = static_cast<int>(degree);
  in.nt = gs_cpu::resolve_threads(num_threads);
  in.means = means.data_ptr<float>();
  in.dc = dc.data_ptr<float>();
  in.rst = rest.data_ptr<float>();
  for (int i = 0; i < 3; ++i) in.cam[i] = static_cast<float>(centre[i]);
  return in;
}

// Unit direction and 1 / |mean - centre|.
inline float direction(const Inputs& in, int64_t i, float* dir) {
  float v[3];
  for (int j = 0; j < 3; ++j) v[j] = in.means[3 * i + j] - in.cam[j];
  const float len = std::sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
  const float inv = 1.0f / len;
  for (int j = 0; j < 3; ++j) dir[j] = v[j] / len;
  return inv;
}

// Colour before the clamp: sum_k b_k sh_k + 0.5 per channel.
inline void raw_colour(const Inputs& in, int64_t i, const float* b, int nk, float* col) {
  const float* d = in.dc + 3 * i;
  const float* r = in.rst + in.rest * 3 * i;
  for (int c = 0; c < 3; ++c) {
    float s = b[0] * d[c];
    for (int k = 1; k < nk; ++k) s += b[k] * r[3 * (k - 1) + c];
    col[c] = s + 0.5f;
  }
}

Tensor sh_forward(const Tensor& means, const Tensor& dc, const Tensor& rest, std::vector<double> centre,
                  int64_t degree, int64_t num_threads) {  // -> colours [N, 3]
  const Inputs in = check(means, dc, rest, centre, degree, num_threads);
  const int nk = (in.deg + 1) * (in.deg + 1);
  Tensor out = at::empty({in.n, 3}, means.options());
  float* po = out.data_ptr<float>();
#pragma omp parallel for num_threads(in.nt) schedule(static, 4096)
  for (int64_t i = 0; i < in.n; ++i) {
    float dir[3], b[16], col[3];
    direction(in, i, dir);
    basis(in.deg, dir[0], dir[1], dir[2], b, nullptr);
    raw_colour(in, i, b, nk, col);
    for (int c = 0; c < 3; ++c) po[3 * i + c] = std::max(col[c], 0.0f);
  }
  return out;
}

std::tuple<Tensor, Tensor, Tensor> sh_backward(const Tensor& means, const Tensor& dc, const Tensor& rest,
                                               std::vector<double> centre, int64_t degree, const Tensor& d_colors,
                                               int64_t num_threads) {  // -> (d_means, d_dc, d_rest)
  const Inputs in = check(means, dc, rest, centre, degree, num_threads);
  gs_cpu::check_arg(d_colors, "sh_backward", "d_colors", at::kFloat, {in.n, 3});
  const int nk = (in.deg + 1) * (in.deg + 1);
  Tensor dm = at::empty({in.n, 3}, means.options());
  Tensor ddc = at::empty({in.n, 1, 3}, means.options());
  Tensor drest = at::empty({in.n, in.rest, 3}, means.options());
  const float* g = d_colors.data_ptr<float>();
  float *pdm = dm.data_ptr<float>(), *pdc = ddc.data_ptr<float>(), *pdr = drest.data_ptr<float>();
#pragma omp parallel for num_threads(in.nt) schedule(static, 4096)
  for (int64_t i = 0; i < in.n; ++i) {
    float dir[3], b[16], db[16][3], col[3], gc[3];
    const float inv_len = direction(in, i, dir);
    basis(in.deg, dir[0], dir[1], dir[2], b, db);
    raw_colour(in, i, b, nk, col);
    for (int c = 0; c < 3; ++c) gc[c] = col[c] >= 0.0f ? g[3 * i + c] : 0.0f;  // torch.clamp_min's rule
    const float* r = in.rst + in.rest * 3 * i;
    float* gr = pdr + in.rest * 3 * i;
    float gdir[3] = {0.0f, 0.0f, 0.0f};
    for (int c = 0; c < 3; ++c) pdc[3 * i + c] = b[0] * gc[c];
    for (int k = 1; k < nk; ++k) {
      const float* rk = r + 3 * (k - 1);
      float* gk = gr + 3 * (k - 1);
      float gb = 0.0f;  // dL / d b_k
      for (int c = 0; c < 3; ++c) {
        gk[c] = b[k] * gc[c];
        gb += rk[c] * gc[c];
      }
      for (int j = 0; j < 3; ++j) gdir[j] += gb * db[k][j];
    }
    std::fill(gr + 3 * (nk - 1), gr + 3 * in.rest, 0.0f);  // inactive coefficients: exact zeros
    // dir = v / |v|: d v = (g - dir (dir . g)) / |v|
    const float dot = gdir[0] * dir[0] + gdir[1] * dir[1] + gdir[2] * dir[2];
    for (int j = 0; j < 3; ++j) pdm[3 * i + j] = (gdir[j] - dir[j] * dot) * inv_len;
  }
  return {dm, ddc, drest};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(gs_cpu_rasterizer, m) {
  m.def("sh_forward(Tensor means, Tensor dc, Tensor rest, float[] centre, int degree, int num_threads) -> Tensor",
        &sh_forward);
  m.def("sh_backward(Tensor means, Tensor dc, Tensor rest, float[] centre, int degree, Tensor d_colors,"
        " int num_threads) -> (Tensor, Tensor, Tensor)",
        &sh_backward);
}
