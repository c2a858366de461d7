#pragma once
// Private helpers of src/bits: argument checks shared by the bit operations and error injection, and
// running a CUDA launcher on the tensor's device and current stream.
#include <ATen/ATen.h>

#include <utility>

#include "bitrobust/common/error.h"
#include "bitrobust/config.h"

#ifdef BITROBUST_WITH_CUDA
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#endif

namespace bitrobust::bits::detail {

/// Element size in bytes of a tensor of codes or bit patterns; Error for other dtypes.
inline int check_bit_tensor(const char* what, const char* name, const at::Tensor& t) {
  BR_CHECK(t.defined(), what, ": ", name, " is an undefined tensor");
  switch (t.scalar_type()) {
    case at::kByte:
    case at::kChar: return 1;
    case at::kShort: return 2;
    case at::kInt: return 4;
    default:
      throw Error(::bitrobust::detail::concat(what, ": ", name, " has dtype ", t.scalar_type(),
                                              "; expected uint8, int8, int16 or int32"));
  }
}

/// Same dtype, shape and device, else Error naming both.
inline void check_same_layout(const char* what, const at::Tensor& a, const at::Tensor& b, const char* a_name = "a",
                              const char* b_name = "b") {
  BR_CHECK(b.defined(), what, ": ", b_name, " is an undefined tensor");
  BR_CHECK(a.scalar_type() == b.scalar_type(), what, ": dtypes differ: ", a_name, " is ", a.scalar_type(), ", ",
           b_name, " is ", b.scalar_type());
  BR_CHECK(a.sizes() == b.sizes(), what, ": shapes differ: ", a_name, " is ", a.sizes(), ", ", b_name, " is ",
           b.sizes());
  BR_CHECK(a.device() == b.device(), what, ": devices differ: ", a_name, " is on ", a.device(), ", ", b_name,
           " is on ", b.device());
}

/// Runs launch(stream) with the tensor's CUDA device current and its current stream (a cudaStream_t
/// passed as void*). Without CUDA support: Error.
template <typename Launch>
void on_cuda(const char* what, const at::Tensor& t, Launch&& launch) {
#ifdef BITROBUST_WITH_CUDA
  const c10::cuda::CUDAGuard guard(t.device());
  std::forward<Launch>(launch)(static_cast<void*>(at::cuda::getCurrentCUDAStream(t.device().index()).stream()));
#else
  (void)launch;
  throw Error(::bitrobust::detail::concat(what, ": tensor is on ", t.device(),
                                          " but bitrobust was built without CUDA kernels"));
#endif
}

}  // namespace bitrobust::bits::detail
