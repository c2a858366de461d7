// src/kernels/cuda/augment_cuda.cu compiled as C++ over the CUDA emulation (NOTE [CUDA emulation]).
#include "kernels/cuda/augment_cuda.cu"
