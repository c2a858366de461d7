#pragma once
// BR_LAUNCH(kernel, grid, block, shared_bytes, stream)(args...) is kernel<<<grid, block, shared_bytes,
// stream>>>(args...), and BR_DYNAMIC_SHARED(type, name) is `extern __shared__ type name[]`, written so
// that the tests can also compile the file as C++ and run the kernel on the CPU (NOTE [CUDA
// emulation], tests/cuda_emulation/emulator.h), where the stand-in <cuda_runtime.h> defines
// BITROBUST_CUDA_EMULATION. A kernel with template arguments separated by commas is launched
// through a variable holding it.
#include <cuda_runtime.h>

#if defined(BITROBUST_CUDA_EMULATION)
#define BR_LAUNCH(kernel, grid, block, shared_bytes, stream) \
  BITROBUST_EMULATED_LAUNCH(kernel, grid, block, shared_bytes)
#define BR_DYNAMIC_SHARED(type, name) type* const name = BITROBUST_EMULATED_DYNAMIC_SHARED(type)
#else
#define BR_LAUNCH(kernel, grid, block, shared_bytes, stream) kernel<<<grid, block, shared_bytes, stream>>>
#define BR_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#endif
