// bitrobust train: train a network (float, or quantization-aware) and save one model file.
#include <ATen/Parallel.h>
#include <torch/utils.h>

#include <cstdio>
#include <optional>

#include "bitrobust/common/error.h"
#include "bitrobust/eval/evaluate.h"
#include "bitrobust/io/model_file.h"
#include "bitrobust/report/output.h"
#include "bitrobust/quant/model_quantization.h"
#include "bitrobust/eval/bit_error_eval.h"
#include "bitrobust/train/randbet.h"
#include "bitrobust/train/trainer.h"
#include "commands.h"

namespace bitrobust::cli {

namespace {
struct TrainCommand {
  CommonOptions common;
  DataOptions data;
  models::ModelSpec spec;
  train::TrainOptions options;
  std::string out;
  std::string checkpoint;
  bool no_augment = false;
  bool no_autoaugment = false;
  std::string init = "torch";
  int64_t eval_batch = 500;
  QuantOptions quant;
  std::string randbet;
  train::RandBETOptions randbet_options;
};

// Clipping a plain BatchNorm/GroupNorm scale (initialised at 1) to W changes what the layer
// computes from the first step; the re-parameterized forms keep it at 1 + weight. Allowed, since
// it trains, but said, since it is rarely what was meant.
void warn_if_clipping_plain_norm_scales(const quant::QuantAwareTraining& qat, const std::string& norm, float clip) {
  if (clip <= 0 || (norm != "bn" && norm != "gn")) return;
  int64_t scales = 0;
  for (const std::string& name : qat.names()) {
    if (name.size() >= 11 && name.compare(name.size() - 11, 11, "norm.weight") == 0) ++scales;
  }
  if (scales == 0) return;
  std::fprintf(stderr,
               "note: clipping at %g also clips the scales of --norm %s (%lld layer%s), which start at 1; --norm re%s "
               "(scale = 1 + weight) is the form the reference clips\n",
               static_cast<double>(clip), norm.c_str(), static_cast<long long>(scales), scales == 1 ? "" : "s",
               norm.c_str());
}
}  // namespace

Runner register_train(CLI::App& app) {
  auto cmd = std::make_shared<TrainCommand>();
  CLI::App* sub = app.add_subcommand("train", "train a network and save it as one model file");
  add_common_options(*sub, cmd->common);
  add_data_options(*sub, cmd->data, true);
  sub->add_option("--model", cmd->spec.arch, "network architecture")
      ->check(CLI::IsMember(models::architecture_names()))
      ->capture_default_str();
  sub->add_option("--norm", cmd->spec.norm, "normalization: none, bn (BatchNorm), gn (GroupNorm), or rebn / regn, their re-parameterized forms, "
                  "whose scale weight clipping can bound (README: train)")
      ->check(CLI::IsMember(models::normalization_names()))
      ->capture_default_str();
  // (the ranges ModelSpec::validate accepts)
  sub->add_option("--width", cmd->spec.channels, "base channels (0 = the model's default: lenet 32, simplenet 64, wrn and resnet20 16)")->transform(integer_in(0, 4096));
  sub->add_option("--depth", cmd->spec.depth, "WRN depth (default 28)")->transform(integer_in(0, 1000));
  sub->add_option("--widen", cmd->spec.widen, "WRN widen factor (default 10)")->transform(integer_in(0, 64));
  sub->add_option("--epochs", cmd->options.epochs, "training epochs")->transform(integer_in(1))->capture_default_str();
  sub->add_option("--batch", cmd->options.batch_size, "batch size")->transform(integer_in(1))->capture_default_str();
  sub->add_option("--lr", cmd->options.lr, "initial learning rate (x0.1 at 2/5, 3/5, 4/5)")->check(decimal_in(0, 1e30, true, false))->capture_default_str();
  sub->add_option("--momentum", cmd->options.momentum, "Nesterov momentum (0: plain SGD)")->check(decimal_in(0, 1, false, true))->capture_default_str();
  sub->add_option("--weight-decay", cmd->options.weight_decay, "weight decay")->check(decimal_in(0, 1e30, false, false))->capture_default_str();
  sub->add_option("--seed", cmd->options.seed, "seed of initialisation, shuffling and augmentation, at most 2^63 - 1")
      ->transform(integer_in(0))
      ->capture_default_str();
  sub->add_option("--init", cmd->init,
                  "weight initialisation: torch (LibTorch's defaults) or reference (Kaiming normal, zero biases, as the reference)")
      ->check(CLI::IsMember(models::initialization_names()))
      ->capture_default_str();
  sub->add_option("--out", cmd->out, "model file to write")->required();
  sub->add_option("--checkpoint", cmd->checkpoint, "checkpoint file (default: OUT.ckpt)");
  sub->add_flag("--resume", cmd->options.resume, "continue from the checkpoint if it exists");
  sub->add_flag("--no-augment", cmd->no_augment, "no data augmentation (MNIST and Fashion-MNIST are never augmented)");
  sub->add_flag("--no-autoaugment", cmd->no_autoaugment,
                "CIFAR-10: crop, flip and Cutout without AutoAugment (the reference uses AutoAugment)");
  sub->add_option("--max-steps", cmd->options.max_steps, "stop after this many steps (0 = all; for tests and timing)")->transform(integer_in(0));
  add_quant_options(*sub, cmd->quant);
  sub->get_option("--scheme")->description(sub->get_option("--scheme")->get_description() +
                                          "; without --scheme, --bits or --clip: a float network");
  sub->add_option("--randbet", cmd->randbet,
                  "random bit error training at this rate (0.01 or 1%); needs quantization-aware training");
  sub->add_option("--randbet-start", cmd->randbet_options.start_loss,
                  "the curriculum's threshold on the clean loss (see --randbet-curriculum)")
      ->check(decimal_in(0, 1e30, true, false))
      ->capture_default_str();
  sub->add_option("--randbet-mode", cmd->randbet_options.mode, "average: each step averages the clean and the perturbed gradient; alternate: clean and perturbed steps "
                  "take turns")
      ->check(CLI::IsMember({"average", "alternate"}))
      ->capture_default_str();
  sub->add_option("--randbet-curriculum", cmd->randbet_options.curriculum,
                  "once: errors from the first step with a clean loss below --randbet-start on; reference: the "
                  "reference code's curriculum, decided after every step from the clean and perturbed losses")
      ->check(CLI::IsMember({"once", "reference"}))
      ->capture_default_str();
  sub->add_option("--randbet-error-model", cmd->randbet_options.error_model,
                  "error model of the training patterns (as eval's --error-model)")->capture_default_str();
  return [cmd, sub]() {
    const at::Device device = setup_runtime(cmd->common);
    report::check_output_path(cmd->out, "model file (--out)", report::OutputKind::File);
    cmd->options.checkpoint = cmd->checkpoint.empty() ? cmd->out + ".ckpt" : cmd->checkpoint;
    // (a name the user did not type is said to be the default: --out of 251-255 bytes is a legal
    // name whose default checkpoint is not)
    report::check_output_path(cmd->options.checkpoint,
                              cmd->checkpoint.empty() ? "checkpoint (--out + .ckpt by default; --checkpoint names it)"
                                                      : "checkpoint",
                              report::OutputKind::File);
    // A run writes its checkpoint over an earlier run's (or, with --resume, the one it continues),
    // but over nothing else (found by a review: --checkpoint naming the quantized model of another
    // run replaced it).
    std::string unreadable;  // why an existing file is not a checkpoint
    const io::ArchiveKind existing = io::archive_kind(cmd->options.checkpoint, &unreadable);
    BR_CHECK(existing != io::ArchiveKind::ModelFile, "cannot write checkpoint ", cmd->options.checkpoint,
             ": it is a bitrobust model file, which the checkpoint would replace; give --checkpoint another name");
    report::check_distinct_paths({{cmd->out, "model file (--out)"},
                                  {cmd->options.checkpoint, "checkpoint"},
                                  {cmd->common.json, "--json file"}},
                                 {});
    // Every option is checked before the data are loaded and the banner printed.
    cmd->options.validate();
    // Sizes the architecture does not have are errors, not silently ignored (checked here, not in
    // ModelSpec::validate, so that model files written when they were ignored still load).
    BR_CHECK(cmd->spec.arch != "mlp" || cmd->spec.channels == 0, "--width ", cmd->spec.channels,
             ": mlp has no base width (its hidden layers have fixed units)");
    BR_CHECK(cmd->spec.arch == "wrn" || (cmd->spec.depth == 0 && cmd->spec.widen == 0),
             "--depth and --widen set WRN's depth and widen factor: they do not apply to ", cmd->spec.arch);
    const bool quantized = cmd->quant.requested();
    const bool randbet = !cmd->randbet.empty();
    BR_CHECK(quantized || (cmd->quant.include.empty() && cmd->quant.exclude.empty()),
             "--quant-include/--quant-exclude choose what quantization-aware training quantizes: add --scheme/--bits "
             "(e.g. --scheme rquant --bits 8)");
    for (const char* option : {"--randbet-start", "--randbet-mode", "--randbet-curriculum", "--randbet-error-model"}) {
      BR_CHECK(randbet || sub->count(option) == 0, option, " sets up random bit error training: add --randbet RATE");
    }
    if (randbet) {
      BR_CHECK(quantized, "--randbet needs quantization-aware training: add --scheme/--bits (e.g. --scheme rquant --bits 8)");
      const std::vector<double> rate = parse_rates_option(cmd->randbet, "--randbet");
      BR_CHECK(rate.size() == 1, "--randbet takes one rate, got '", cmd->randbet, "'");
      cmd->randbet_options.rate = rate[0];
      cmd->randbet_options.error_model =
          parse_error_model_option(cmd->randbet_options.error_model, 0.0, "--randbet-error-model").name();
      cmd->randbet_options.seed = cmd->options.seed;
      cmd->randbet_options.validate();
      if (!bits::ErrorModel::parse(cmd->randbet_options.error_model, rate[0]).has_errors() && !cmd->common.quiet) {
        // Allowed (a control run: the same steps, the same cost), but said, as it is rarely meant.
        std::fprintf(stderr, "note: --randbet %s draws no bit errors: each perturbed pass runs on the clean weights\n",
                     cmd->randbet.c_str());
      }
    }
    quant::QuantScheme scheme;
    if (quantized) scheme = cmd->quant.build_scheme();
    if (randbet) {
      check_error_model_fits(bits::ErrorModel::parse(cmd->randbet_options.error_model, 0.0), {scheme.bits},
                             "--randbet-error-model");
    }

    check_cifar_protocol_applies(cmd->data);
    BR_CHECK(!cmd->no_autoaugment || data::default_augmentation(cmd->data.dataset).autoaugment,
             "--no-autoaugment: training on ", cmd->data.dataset, " uses no AutoAugment to leave out");
    if (cmd->data.protocol.empty()) cmd->data.protocol = "holdout";  // (recorded for every data set)
    data::Dataset train_set = load_data(cmd->data, "train", device);
    data::Dataset test_set = load_data(cmd->data, "test", device);
    for (const data::Dataset* set : {&train_set, &test_set}) {
      check_outputs_spare_data({{cmd->out, "model file (--out)"}, {cmd->options.checkpoint, "checkpoint"},
                                {cmd->common.json, "--json file"}},
                               *set);
    }
    // (after the data files, which the message names as such; with --resume the file was to be read)
    // (`unreadable` says why: a damaged file, or one of a Torch version the archive checks do not
    // know, or a mistyped BITROBUST_TRUST_ARCHIVES: not always a file to remove)
    BR_CHECK(existing != io::ArchiveKind::Other || !cmd->options.resume, "cannot resume from checkpoint ",
             cmd->options.checkpoint, ": it cannot be read as a bitrobust training checkpoint: ", unreadable,
             "; if it is damaged, remove it to train from the start, or give --checkpoint another name");
    BR_CHECK(existing != io::ArchiveKind::Other, "cannot write checkpoint ", cmd->options.checkpoint,
             ": it exists and is not a bitrobust training checkpoint (", unreadable, "), and the checkpoint would "
             "replace it; give --checkpoint another name, or remove the file");
    cmd->spec.in_channels = train_set.channels();
    cmd->spec.height = train_set.height();
    cmd->spec.width = train_set.width();
    cmd->spec.num_classes = train_set.num_classes;
    cmd->spec.validate();
    // A batch larger than the training set would be one partial batch of all of it (memory for the
    // whole set's activations at once), not the batch asked for.
    BR_CHECK(cmd->options.batch_size <= train_set.size(), "--batch ", cmd->options.batch_size, " is larger than the ",
             train_set.size(), " training images");
    // BatchNorm cannot train on a batch of one image (its variance is 0/0): found now, not after an epoch.
    const bool batch_norm = cmd->spec.norm == "bn" || cmd->spec.norm == "rebn";
    BR_CHECK(!(batch_norm && cmd->options.batch_size == 1), "--batch 1 with --norm ", cmd->spec.norm,
             ": BatchNorm cannot train on batches of 1 image; choose --batch 2 or more");
    BR_CHECK(!(batch_norm && train_set.size() % cmd->options.batch_size == 1),
             "--batch ", cmd->options.batch_size, " leaves a last batch of 1 image (", train_set.size(),
             " training images), which BatchNorm cannot train on; choose another --batch");
    cmd->options.augment = !cmd->no_augment;
    cmd->options.autoaugment = !cmd->no_autoaugment;
    const std::string augmentation = train::training_augmentation(train_set.name, cmd->options).describe();
    cmd->options.progress = !cmd->common.quiet;

    // Everything a resumed run must share with the run that wrote the checkpoint.
    nlohmann::json settings = {{"dataset", train_set.name}, {"cifar_protocol", cmd->data.protocol},
                               {"model", cmd->spec.to_json()}, {"init", cmd->init},
                               {"scheme", quantized ? scheme.to_string() : std::string("float")},
                               {"quant_include", cmd->quant.include}, {"quant_exclude", cmd->quant.exclude},
                               // (the same names and counts may hold other images)
                               {"data", train_set.fingerprint()}};
    // On the CPU the float sums of a step depend on how many threads share them: a run resumed
    // with another count would not end with the weights of the uninterrupted run.
    if (device.is_cpu()) settings["threads"] = at::get_num_threads();
    // (nor on another device: a GPU's sums differ from the CPU's, and a checkpoint of one said so
    // only through a missing thread count)
    settings["device"] = device.is_cpu() ? "cpu" : "cuda";
    if (randbet) {
      settings["randbet"] = {{"rate", cmd->randbet_options.rate}, {"mode", cmd->randbet_options.mode},
                             {"start", cmd->randbet_options.start_loss},
                             {"error_model", cmd->randbet_options.error_model}};
      // Only when not the default, so checkpoints written before the option existed still resume.
      if (cmd->randbet_options.curriculum != "once") settings["randbet"]["curriculum"] = cmd->randbet_options.curriculum;
    }
    cmd->options.settings = settings.dump();
    torch::manual_seed(cmd->options.seed);
    auto net = models::build_model(cmd->spec);
    models::initialize(*net, cmd->init);
    std::unique_ptr<quant::QuantAwareTraining> qat;
    std::unique_ptr<train::RandomBitErrorTraining> rbet;
    train::StepHooks hooks;
    if (quantized) {
      qat = std::make_unique<quant::QuantAwareTraining>(*net, scheme, cmd->quant.selector());
      qat->clip_weights();
      std::fprintf(stderr, "quantization-aware training, scheme %s\n", scheme.to_string().c_str());
      warn_if_clipping_plain_norm_scales(*qat, cmd->spec.norm, scheme.clip);
      if (randbet) {
        rbet = std::make_unique<train::RandomBitErrorTraining>(*net, *qat, cmd->randbet_options);
        const std::string curriculum = cmd->randbet_options.curriculum == "once"
                                           ? "from loss < "
                                           : "the reference's curriculum, threshold ";
        std::fprintf(stderr, "random bit error training: %s at p = %g, %s, %s%g\n",
                     cmd->randbet_options.error_model.c_str(), cmd->randbet_options.rate,
                     cmd->randbet_options.mode.c_str(), curriculum.c_str(), cmd->randbet_options.start_loss);
      }
    }
    if (qat) hooks = train::robust_training_hooks(*qat, rbet.get());
    std::fprintf(stderr, "training %s (%s, %lld parameters) on %s (%lld images, augmentation %s), seed %llu, %s\n",
                 cmd->spec.arch.c_str(), cmd->spec.norm.c_str(),
                 static_cast<long long>(models::parameter_count(*net)), train_set.name.c_str(),
                 static_cast<long long>(train_set.size()), augmentation.c_str(),
                 static_cast<unsigned long long>(cmd->options.seed),
                 device.str().c_str());
    const train::TrainResult result = train::train(*net, train_set, cmd->options, hooks);
    eval::EvalResult test = eval::evaluate(*net, test_set, cmd->eval_batch);

    io::ModelFile file;
    file.spec = cmd->spec;
    file.net = net;
    double float_error = test.error;
    std::optional<quant::QuantizedModel> q;
    if (quantized) {
      // The file keeps the float master weights; the reported error is the quantized network's.
      q = quant::quantize_model(*net, scheme, cmd->quant.selector());
      const WeightBackup floats(*net);
      q->load_clean_weights();
      test = eval::evaluate(*net, test_set, cmd->eval_batch);
      floats.restore();
    }
    file.meta = {{"dataset", train_set.name},
                 {"epochs", cmd->options.epochs},
                 {"steps", result.steps},  // all of "epochs" unless --max-steps stopped the run
                 {"batch", cmd->options.batch_size},
                 {"lr", cmd->options.lr},
                 // (found by a review: both change the weights, and only the checkpoint had them)
                 {"momentum", cmd->options.momentum},
                 {"weight_decay", cmd->options.weight_decay},
                 {"seed", cmd->options.seed},
                 {"init", cmd->init},
                 {"train_data", settings["data"]},
                 {"threads", device.is_cpu() ? nlohmann::json(at::get_num_threads()) : nlohmann::json()},
                 {"device", device.str()},  // (CPU and GPU train different weights)
                 {"augment", augmentation},
                 {"test_error", test.error},
                 {"float_test_error", float_error},
                 {"train_seconds", result.seconds},
                 {"train_images_per_second", result.images_per_second},
                 {"train_steady_images_per_second", result.steady_images_per_second}};
    // (only CIFAR-10 has split protocols; the checkpoint's settings keep "holdout" for every data
    // set, as checkpoints written before this resume with it)
    if (train_set.name == "cifar10") file.meta["cifar_protocol"] = cmd->data.protocol;
    // A resume that found the whole run in its checkpoint trained nothing: no time or speed to report
    // (not 0), and the last epoch's loss comes from the checkpoint (unknown for an older one).
    const bool trained_now = result.steps_run > 0;
    if (!trained_now) {
      for (const char* key : {"train_seconds", "train_images_per_second", "train_steady_images_per_second"}) {
        file.meta[key] = nullptr;
      }
    }
    if (q) {
      quant::store_in_model_file(*q, file);
      file.meta["quantized_by"] = "training";  // (`info` tells quantization-aware training from `quantize`)
    }
    if (rbet) {
      file.meta["randbet"] = {{"rate", cmd->randbet_options.rate},
                              {"start_loss", cmd->randbet_options.start_loss},
                              {"mode", cmd->randbet_options.mode},
                              {"curriculum", cmd->randbet_options.curriculum},
                              {"error_model", cmd->randbet_options.error_model},
                              {"perturbed_steps", rbet->perturbed_steps()}};
    }
    io::check_finite_module(*net, "trained model");  // e.g. resumed at its last epoch: never save NaN
    nlohmann::json summary = file.meta;
    summary["format"] = "bitrobust-train-1";  // (each command's JSON names its kind: compare refuses the others by it)
    summary["model"] = cmd->out;
    summary["spec"] = cmd->spec.to_json();
    summary["final_train_loss"] = std::isfinite(result.final_loss) ? nlohmann::json(result.final_loss) : nlohmann::json();
    summary["versions"] = io::version_info();
    summary["scheme"] = quantized ? scheme.to_string() : "float";
    summary["cifar_protocol"] = recorded_protocol(train_set, cmd->data);  // ("" elsewhere, as eval's JSON)
    save_model_and_json(cmd->out, file, cmd->common.json, summary, [&] {
      char training[96];
      if (trained_now) {
        std::snprintf(training, sizeof training, "training %.1f s, %.0f images/s", result.seconds,
                      result.images_per_second);
      } else if (result.epochs_done == cmd->options.epochs) {
        std::snprintf(training, sizeof training, "nothing left to train (the checkpoint holds all %lld epochs)",
                      static_cast<long long>(result.epochs_done));
      } else {
        std::snprintf(training, sizeof training, "nothing trained: --max-steps %lld reached (%lld of %lld epochs)",
                      static_cast<long long>(cmd->options.max_steps), static_cast<long long>(result.epochs_done),
                      static_cast<long long>(cmd->options.epochs));
      }
      std::printf("test error %.2f%% on %s %s (%lld images%s); %s; saved %s\n", 100 * test.error,
                  test_set.name.c_str(), test_set.split.c_str(), static_cast<long long>(test.examples),
                  protocol_note(test_set, cmd->data).c_str(), training, cmd->out.c_str());
    });
    return 0;
  };
}

}  // namespace bitrobust::cli
