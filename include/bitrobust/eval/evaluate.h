#pragma once
// Clean evaluation of a classifier on a data set.
#include <ATen/core/Tensor.h>

#include "bitrobust/data/dataset.h"
#include "bitrobust/models/models.h"

namespace bitrobust::eval {

struct EvalResult {
  double error = 0;       ///< fraction of misclassified examples in [0, 1]
  int64_t examples = 0;
  at::Tensor correct;     ///< bool [examples]: correctly classified (on the evaluation device)
  double seconds = 0;
};

/// Evaluates in eval mode without gradients, in batches of `batch_size`, on the data's device.
EvalResult evaluate(models::Classifier& net, const data::Dataset& data, int64_t batch_size = 500);

/// The fraction of the bool tensor `wrong` that is true: its count over its size, one rounding. Every
/// error bitrobust reports (clean, perturbed, RErr) is computed this one way, so that RErr >= clean
/// error and RErr >= perturbed error hold exactly (1 - accuracy could sit a rounding step off).
double error_fraction(const at::Tensor& wrong);

}  // namespace bitrobust::eval
