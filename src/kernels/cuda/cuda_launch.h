#pragma once
// BR_LAUNCH(kernel, grid, block, shared_bytes, stream)(args...) is kernel<<<grid, block, shared_bytes,
// stream>>>(args...), written so that the tests can also compile the file as C++ and run the kernel
// on the CPU (NOTE [CUDA emulation], tests/cuda_emulation/emulator.h), where the stand-in
// <cuda_runtime.h> defines BITROBUST_CUDA_EMULATION.
#include <cuda_runtime.h>

#if defined(BITROBUST_CUDA_EMULATION)
#define BR_LAUNCH(kernel, grid, block, shared_bytes, stream) \
  BITROBUST_EMULATED_LAUNCH(kernel, grid, block, shared_bytes)
#else
#define BR_LAUNCH(kernel, grid, block, shared_bytes, stream) kernel<<<grid, block, shared_bytes, stream>>>
#endif
