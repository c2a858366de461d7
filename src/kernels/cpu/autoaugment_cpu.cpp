// The CIFAR-10 AutoAugment policy table, resolved on the host for the CPU and CUDA kernels.
// See NOTE [AutoAugment exactness] in autoaugment_kernels.h.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "bitrobust/data/autoaugment_kernels.h"

namespace bitrobust::kernels {
namespace {

struct PolicyEntry {
  double p1;
  AutoAugmentOp op1;
  int index1;
  double p2;
  AutoAugmentOp op2;
  int index2;
};

using Op = AutoAugmentOp;
// The reference's CIFAR10Policy (common/autoaugment.py), in its order.
constexpr PolicyEntry kCifar10Policy[kAutoAugmentSubPolicies] = {
    {0.1, Op::kInvert, 7, 0.2, Op::kContrast, 6},         {0.7, Op::kRotate, 2, 0.3, Op::kTranslateX, 9},
    {0.8, Op::kSharpness, 1, 0.9, Op::kSharpness, 3},     {0.5, Op::kShearY, 8, 0.7, Op::kTranslateY, 9},
    {0.5, Op::kAutoContrast, 8, 0.9, Op::kEqualize, 2},   {0.2, Op::kShearY, 7, 0.3, Op::kPosterize, 7},
    {0.4, Op::kColor, 3, 0.6, Op::kBrightness, 7},        {0.3, Op::kSharpness, 9, 0.7, Op::kBrightness, 9},
    {0.6, Op::kEqualize, 5, 0.5, Op::kEqualize, 1},       {0.6, Op::kContrast, 7, 0.6, Op::kSharpness, 5},
    {0.7, Op::kColor, 7, 0.5, Op::kTranslateX, 8},        {0.3, Op::kEqualize, 7, 0.4, Op::kAutoContrast, 8},
    {0.4, Op::kTranslateY, 3, 0.2, Op::kSharpness, 6},    {0.9, Op::kBrightness, 6, 0.2, Op::kColor, 8},
    {0.5, Op::kSolarize, 2, 0.0, Op::kInvert, 3},         {0.2, Op::kEqualize, 0, 0.6, Op::kAutoContrast, 0},
    {0.2, Op::kEqualize, 8, 0.6, Op::kEqualize, 4},       {0.9, Op::kColor, 9, 0.6, Op::kEqualize, 6},
    {0.8, Op::kAutoContrast, 4, 0.2, Op::kSolarize, 8},   {0.1, Op::kBrightness, 3, 0.7, Op::kColor, 0},
    {0.4, Op::kSolarize, 5, 0.9, Op::kAutoContrast, 3},   {0.9, Op::kTranslateY, 9, 0.7, Op::kTranslateY, 9},
    {0.9, Op::kAutoContrast, 2, 0.8, Op::kSolarize, 3},   {0.8, Op::kEqualize, 8, 0.1, Op::kInvert, 3},
    {0.7, Op::kTranslateY, 9, 0.9, Op::kAutoContrast, 1},
};

/// numpy.linspace(start, stop, 10)[index]: index * ((stop - start) / 9) + start, the last exactly stop.
double linspace10(double start, double stop, int index) {
  if (index == 9) return stop;
  return static_cast<double>(index) * ((stop - start) / 9.0) + start;
}

/// Python's round(value, 15): the correctly rounded 15-decimal value, read back.
double round15(double value) {
  char text[64];
  std::snprintf(text, sizeof text, "%.15f", value);
  return std::strtod(text, nullptr);
}

/// Pillow's FIX: 16.16 fixed point, FLOOR(v * 65536 + 0.5).
int32_t pil_fix(double v) {
  const double scaled = v * 65536.0 + 0.5;
  return scaled < 0.0 ? static_cast<int32_t>(std::floor(scaled)) : static_cast<int32_t>(scaled);
}

/// Image.rotate(angle) with the default centre, then affine_fixed's coefficients.
void rotation_fixed(double degrees, int height, int width, int32_t* out) {
  const double angle = -(degrees * (3.141592653589793 / 180.0));  // -math.radians(angle)
  double a[6] = {round15(std::cos(angle)), round15(std::sin(angle)), 0.0,
                 round15(-std::sin(angle)), round15(std::cos(angle)), 0.0};
  const double cx = width / 2.0, cy = height / 2.0;
  const double tx = a[0] * (-cx - 0.0) + a[1] * (-cy - 0.0) + a[2];
  const double ty = a[3] * (-cx - 0.0) + a[4] * (-cy - 0.0) + a[5];
  a[2] = tx + cx;
  a[5] = ty + cy;
  out[0] = pil_fix(a[0]);
  out[1] = pil_fix(a[1]);
  out[3] = pil_fix(a[3]);
  out[4] = pil_fix(a[4]);
  out[2] = pil_fix(a[2] + a[0] * 0.5 + a[1] * 0.5);
  out[5] = pil_fix(a[5] + a[3] * 0.5 + a[4] * 0.5);
}

}  // namespace

AutoAugmentStep autoaugment_step(AutoAugmentOp op, int index, double probability, int height, int width) {
  AutoAugmentStep step;
  step.op = op;
  step.apply_below = static_cast<uint64_t>(std::ceil(probability * 4294967296.0));
  step.magnitude = autoaugment_magnitude(op, index);
  if (op == AutoAugmentOp::kPosterize) step.posterize_bits = static_cast<int>(step.magnitude);
  if (op == AutoAugmentOp::kRotate) rotation_fixed(step.magnitude, height, width, step.rotate_fixed);
  return step;
}

double autoaugment_magnitude(AutoAugmentOp op, int index) {
  if (index < 0 || index > 9) return 0.0;
  switch (op) {
    case Op::kShearX:
    case Op::kShearY:
      return linspace10(0.0, 0.3, index);
    case Op::kTranslateX:
    case Op::kTranslateY:
      return linspace10(0.0, 150.0 / 331.0, index);
    case Op::kRotate:
      return linspace10(0.0, 30.0, index);
    case Op::kColor:
    case Op::kContrast:
    case Op::kSharpness:
    case Op::kBrightness:
      return linspace10(0.0, 0.9, index);
    case Op::kPosterize:
      return std::nearbyint(linspace10(8.0, 4.0, index));  // np.round: half to even
    case Op::kSolarize:
      return linspace10(256.0, 0.0, index);
    case Op::kAutoContrast:
    case Op::kEqualize:
    case Op::kInvert:
      return 0.0;
  }
  return 0.0;
}

const char* autoaugment_op_name(AutoAugmentOp op) {
  switch (op) {
    case Op::kShearX: return "shearX";
    case Op::kShearY: return "shearY";
    case Op::kTranslateX: return "translateX";
    case Op::kTranslateY: return "translateY";
    case Op::kRotate: return "rotate";
    case Op::kColor: return "color";
    case Op::kPosterize: return "posterize";
    case Op::kSolarize: return "solarize";
    case Op::kContrast: return "contrast";
    case Op::kSharpness: return "sharpness";
    case Op::kBrightness: return "brightness";
    case Op::kAutoContrast: return "autocontrast";
    case Op::kEqualize: return "equalize";
    case Op::kInvert: return "invert";
  }
  return nullptr;
}

AutoAugmentPolicy cifar10_autoaugment_policy(int height, int width) {
  AutoAugmentPolicy policy;
  for (int s = 0; s < kAutoAugmentSubPolicies; ++s) {
    const PolicyEntry& e = kCifar10Policy[s];
    policy.steps[s][0] = autoaugment_step(e.op1, e.index1, e.p1, height, width);
    policy.steps[s][1] = autoaugment_step(e.op2, e.index2, e.p2, height, width);
  }
  return policy;
}

}  // namespace bitrobust::kernels
