// src/kernels/cuda/bit_errors_cuda.cu compiled as C++ over the CUDA emulation (NOTE [CUDA emulation]).
#include "kernels/cuda/bit_errors_cuda.cu"
