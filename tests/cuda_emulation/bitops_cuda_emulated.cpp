// src/kernels/cuda/bitops_cuda.cu compiled as C++ over the CUDA emulation (NOTE [CUDA emulation]).
#include "kernels/cuda/bitops_cuda.cu"
