// src/kernels/cuda/group_norm_relu_cuda.cu compiled as C++ over the CUDA emulation (NOTE [CUDA emulation]).
#include "kernels/cuda/group_norm_relu_cuda.cu"
