// src/kernels/cuda/quantize_cuda.cu compiled as C++ over the CUDA emulation (NOTE [CUDA emulation]).
#include "kernels/cuda/quantize_cuda.cu"
