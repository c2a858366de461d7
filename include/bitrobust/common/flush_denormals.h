#pragma once

namespace bitrobust::kernels {
/// Sets flush-to-zero and denormals-are-zero on the calling thread and on every OpenMP worker
/// (x86; a no-op elsewhere). Denormals make CPU float arithmetic many times slower; they appear in
/// float training once weights and gradients get tiny, and flushing them changes no result measurably.
void flush_denormals_on_all_threads();
}  // namespace bitrobust::kernels
