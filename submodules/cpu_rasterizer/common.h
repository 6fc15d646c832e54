// Helpers shared by the kernels' translation units (rasterizer.cpp, projection.cpp, sh.cpp).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstdint>

namespace gs_cpu {

// OpenMP thread count of a kernel call: num_threads > 0 as given, 0 = all cores.
inline int resolve_threads(int64_t num_threads) {
  return num_threads > 0 ? static_cast<int>(num_threads) : std::max(1, omp_get_num_procs());
}

}  // namespace gs_cpu
