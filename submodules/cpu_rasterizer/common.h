// Helpers shared by the kernels' translation units (rasterizer.cpp, projection.cpp, sh.cpp): thread counts and
// the argument checks every op runs before it touches a pointer (a wrong shape must be an error, not a read
// past the end of a buffer).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <sstream>
#include <string>

namespace gs_cpu {

// OpenMP thread count of a kernel call: num_threads > 0 as given, 0 = all cores.
inline int resolve_threads(int64_t num_threads) {
  TORCH_CHECK_VALUE(num_threads >= 0, "num_threads must be >= 0 (0 = all cores), got ", num_threads);
  return num_threads > 0 ? static_cast<int>(num_threads) : std::max(1, omp_get_num_procs());
}

inline std::string shape_str(std::initializer_list<int64_t> shape) {
  std::ostringstream s;
  s << "[";
  bool first = true;
  for (int64_t d : shape) {
    s << (first ? "" : ", ") << (d < 0 ? std::string("*") : std::to_string(d));
    first = false;
  }
  s << "]";
  return s.str();
}

inline std::string shape_str(const at::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

// Checks a tensor argument of op `op`: CPU, dtype, contiguous, and its shape (-1 = any size in that dim).
//   check_arg(opacities, "vote", "opacities", at::kFloat, {n});  // [N] float32
inline void check_arg(const at::Tensor& t, const char* op, const char* name, at::ScalarType dtype,
                      std::initializer_list<int64_t> shape) {
  TORCH_CHECK_VALUE(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " must be a CPU tensor, got one on ", t.device());
  TORCH_CHECK_VALUE(t.scalar_type() == dtype, op, ": ", name, " must be ", c10::toString(dtype), ", got ",
              c10::toString(t.scalar_type()));
  bool ok = t.dim() == static_cast<int64_t>(shape.size());
  if (ok) {
    int64_t i = 0;
    for (int64_t d : shape) {
      ok = ok && (d < 0 || t.size(i) == d);
      ++i;
    }
  }
  TORCH_CHECK_VALUE(ok, op, ": ", name, " must have shape ", shape_str(shape), ", got ", shape_str(t));
  TORCH_CHECK_VALUE(t.is_contiguous(), op, ": ", name, " must be contiguous (call .contiguous())");
}

}  // namespace gs_cpu
