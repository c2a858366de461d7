// tests/bits/cuda_identity_check.cu compiled as C++ over the CUDA emulation (NOTE [CUDA emulation]).
#include "bits/cuda_identity_check.cu"
