// Anchor of the bitrobust_kernels library (plain C++ kernels over raw pointers, no Torch).
namespace bitrobust::kernels {
const char* kernels_library_name() { return "bitrobust_kernels"; }
}  // namespace bitrobust::kernels
