// Torch-facing bit operations: validate, allocate, dispatch to the CPU or CUDA kernels.
#include "bitrobust/bits/bitops.h"

#include <ATen/ATen.h>

#include <string>

#include "bits/device_dispatch.h"
#include "bitrobust/bits/bitops_kernels.h"
#include "bitrobust/common/error.h"

namespace bitrobust::bits {
namespace {

at::Tensor binary(const char* what, BitBinaryOp op, const at::Tensor& a, const at::Tensor& b) {
  const int eb = detail::check_bit_tensor(what, "a", a);
  detail::check_same_layout(what, a, b);
  const at::Tensor ac = a.contiguous(), bc = b.contiguous();
  at::Tensor out = at::empty_like(ac, ac.options().memory_format(at::MemoryFormat::Contiguous));
  const int64_t n = ac.numel();
  if (ac.is_cuda()) {
    detail::on_cuda(what, ac, [&](void* stream) {
      bitops_binary_cuda(op, ac.data_ptr(), bc.data_ptr(), out.data_ptr(), n, eb, stream);
    });
  } else {
    bitops_binary_cpu(op, ac.data_ptr(), bc.data_ptr(), out.data_ptr(), n, eb);
  }
  return out;
}

at::Tensor counts(const char* what, const at::Tensor& a, const at::Tensor* b) {
  const int eb = detail::check_bit_tensor(what, "a", a);
  if (b != nullptr) detail::check_same_layout(what, a, *b);
  const at::Tensor ac = a.contiguous();
  const at::Tensor bc = b != nullptr ? b->contiguous() : at::Tensor();
  at::Tensor out = at::empty(ac.sizes(), ac.options().dtype(at::kByte));
  const int64_t n = ac.numel();
  auto* dst = out.data_ptr<uint8_t>();
  if (ac.is_cuda()) {
    detail::on_cuda(what, ac, [&](void* stream) {
      if (b != nullptr) {
        bitops_hamming_cuda(ac.data_ptr(), bc.data_ptr(), dst, n, eb, stream);
      } else {
        bitops_popcount_cuda(ac.data_ptr(), dst, n, eb, stream);
      }
    });
  } else if (b != nullptr) {
    bitops_hamming_cpu(ac.data_ptr(), bc.data_ptr(), dst, n, eb);
  } else {
    bitops_popcount_cpu(ac.data_ptr(), dst, n, eb);
  }
  return out;
}

}  // namespace

at::Tensor bit_and(const at::Tensor& a, const at::Tensor& b) { return binary("bit_and", BitBinaryOp::And, a, b); }
at::Tensor bit_or(const at::Tensor& a, const at::Tensor& b) { return binary("bit_or", BitBinaryOp::Or, a, b); }
at::Tensor bit_xor(const at::Tensor& a, const at::Tensor& b) { return binary("bit_xor", BitBinaryOp::Xor, a, b); }

at::Tensor flip_bits(const at::Tensor& codes, const at::Tensor& mask) {
  return binary("flip_bits", BitBinaryOp::Xor, codes, mask);
}
at::Tensor set_bits(const at::Tensor& codes, const at::Tensor& mask) {
  return binary("set_bits", BitBinaryOp::Or, codes, mask);
}
at::Tensor clear_bits(const at::Tensor& codes, const at::Tensor& mask) {
  return binary("clear_bits", BitBinaryOp::AndNot, codes, mask);
}
at::Tensor most_significant_difference(const at::Tensor& a, const at::Tensor& b) {
  return binary("most_significant_difference", BitBinaryOp::MsbDiff, a, b);
}
at::Tensor msb_projection(const at::Tensor& original, const at::Tensor& perturbed) {
  // (the inputs are checked, and named, by the first call)
  const at::Tensor highest = binary("msb_projection", BitBinaryOp::MsbDiff, original, perturbed);
  return binary("msb_projection", BitBinaryOp::Xor, original, highest);
}

at::Tensor bit_not(const at::Tensor& a) {
  const int eb = detail::check_bit_tensor("bit_not", "a", a);
  const at::Tensor ac = a.contiguous();
  at::Tensor out = at::empty_like(ac, ac.options().memory_format(at::MemoryFormat::Contiguous));
  if (ac.is_cuda()) {
    detail::on_cuda("bit_not", ac, [&](void* stream) {
      bitops_not_cuda(ac.data_ptr(), out.data_ptr(), ac.numel(), eb, stream);
    });
  } else {
    bitops_not_cpu(ac.data_ptr(), out.data_ptr(), ac.numel(), eb);
  }
  return out;
}

at::Tensor popcount(const at::Tensor& codes) { return counts("popcount", codes, nullptr); }

at::Tensor hamming_distance(const at::Tensor& a, const at::Tensor& b) { return counts("hamming_distance", a, &b); }

int64_t hamming_distance_total(const at::Tensor& a, const at::Tensor& b) {
  const int eb = detail::check_bit_tensor("hamming_distance_total", "a", a);
  detail::check_same_layout("hamming_distance_total", a, b);
  const at::Tensor ac = a.contiguous(), bc = b.contiguous();
  if (ac.is_cuda()) {
    at::Tensor total = at::zeros({1}, ac.options().dtype(at::kLong));
    detail::on_cuda("hamming_distance_total", ac, [&](void* stream) {
      bitops_hamming_total_cuda(ac.data_ptr(), bc.data_ptr(), ac.numel(), eb,
                                reinterpret_cast<unsigned long long*>(total.data_ptr<int64_t>()), stream);
    });
    return total.item<int64_t>();
  }
  return bitops_hamming_total_cpu(ac.data_ptr(), bc.data_ptr(), ac.numel(), eb);
}

at::Tensor extract_bits(const at::Tensor& codes, int bits) {
  const int eb = detail::check_bit_tensor("extract_bits", "codes", codes);
  BR_CHECK(bits >= 1 && bits <= 8 * eb, "extract_bits: bits must be in [1, ", 8 * eb, "] for ",
           codes.scalar_type(), " codes, got ", bits);
  const at::Tensor ac = codes.contiguous();
  std::vector<int64_t> shape(ac.sizes().begin(), ac.sizes().end());
  shape.push_back(bits);
  at::Tensor out = at::empty(shape, ac.options().dtype(at::kByte));
  if (ac.is_cuda()) {
    detail::on_cuda("extract_bits", ac, [&](void* stream) {
      bitops_extract_cuda(ac.data_ptr(), out.data_ptr<uint8_t>(), ac.numel(), eb, bits, stream);
    });
  } else {
    bitops_extract_cpu(ac.data_ptr(), out.data_ptr<uint8_t>(), ac.numel(), eb, bits);
  }
  return out;
}

}  // namespace bitrobust::bits
