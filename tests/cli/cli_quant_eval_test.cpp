// The quantize / export / eval / pattern commands end to end on small models and Fashion-MNIST.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <zlib.h>
#include <torch/torch.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <cstring>
#include <fstream>
#include <iterator>

#include "bitrobust/common/cpu_description.h"
#include "bitrobust/common/error.h"
#include "bitrobust/io/model_file.h"
#include "bitrobust/quant/model_quantization.h"
#include "data/data_files.h"
#include "test_util.h"

using namespace bitrobust;

namespace {
void expect_failure(const std::string& args, const std::string& part) {
  const test_util::CliResult r = test_util::run_cli(args);
  EXPECT_EQ(r.status, 1) << args << "\n" << r.output;
  EXPECT_NE(r.output.find(part), std::string::npos) << args << "\n" << r.output;
}
bool fashion_mnist_available() {
  try {
    data::load_dataset({"fashion-mnist", "test", "", "holdout"});
    return true;
  } catch (const Error&) {
    return false;
  }
}
/// A small float MLP for Fashion-MNIST written as a model file.
std::string write_float_model(const test_util::TempDir& dir, int64_t classes = 10, bool nan = false,
                              int64_t hidden = 16) {
  io::ModelFile f;
  f.spec.arch = "mlp";
  f.spec.norm = "none";
  f.spec.units = {hidden};
  f.spec.num_classes = classes;
  torch::manual_seed(3);
  f.net = models::build_model(f.spec);
  if (nan) {
    torch::NoGradGuard g;
    f.net->named_parameters()["fc1.bias"][3] = std::numeric_limits<float>::quiet_NaN();
  }
  f.meta = {{"dataset", "fashion-mnist"}};
  const std::string path =
      dir.file(nan ? "nan.pt" : "float" + std::to_string(classes) + "_" + std::to_string(hidden) + ".pt");
  io::save_model_file(path, f);
  return path;
}
nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  return nlohmann::json::parse(in);
}
}  // namespace

class CliQuantEval : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fashion_mnist_available()) GTEST_SKIP() << "Fashion-MNIST is not installed";
  }
  test_util::TempDir dir;
};

// A --json that is a device is written after the model file (it cannot be staged beside it): its
// failure is an error that says the model was written, not one that reads as if the work were lost.
TEST_F(CliQuantEval, AFailedJsonDeviceAfterTheModelSaysTheModelWasWritten) {
  if (!std::filesystem::is_character_file("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const std::string q = dir.file("q.pt");
  expect_failure("quantize --model " + write_float_model(dir) + " --scheme rquant --bits 4 --out " + q +
                     " --json /dev/full",
                 "cannot write --json file /dev/full: " + std::string(std::strerror(ENOSPC)) + " (the model file " + q +
                     " was written)");
  EXPECT_EQ(io::load_model_file(q).meta["quantization"]["scheme"], "u4-asym-tensor-round");
}

TEST_F(CliQuantEval, QuantizeExportReadsBackTheCodes) {
  const std::string model = write_float_model(dir);
  const std::string q = dir.file("q.pt");
  const test_util::CliResult r = test_util::run_cli("quantize --model " + model + " --scheme u6-sym-channel-round --out " + q + " --json " +
                          dir.file("q.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("u6-sym-channel-round"), std::string::npos);
  ASSERT_EQ(test_util::run_cli("export --model " + q + " --out " + dir.file("codes")).status, 0);
  const auto manifest = read_json(dir.file("codes/manifest.json"));
  EXPECT_EQ(manifest["scheme"], "u6-sym-channel-round");
  io::ModelFile file = io::load_model_file(q);
  const auto qm = quant::load_from_model_file(file);
  ASSERT_EQ(manifest["tensors"].size(), qm.tensors.size());
  for (size_t i = 0; i < qm.tensors.size(); ++i) {
    const auto& t = manifest["tensors"][i];
    EXPECT_EQ(t["name"], qm.names[i]);
    EXPECT_EQ(t["bits"], 6);
    EXPECT_EQ(t["container"], "uint8");
    EXPECT_EQ(t["channels"].get<int64_t>(), qm.tensors[i].channels);
    std::ifstream in(dir.file("codes/" + t["file"].get<std::string>()), std::ios::binary);
    std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const at::Tensor codes = qm.tensors[i].codes.contiguous();
    ASSERT_EQ(static_cast<int64_t>(bytes.size()), codes.numel());
    EXPECT_EQ(std::memcmp(bytes.data(), codes.data_ptr(), bytes.size()), 0) << qm.names[i];
    EXPECT_EQ(t["crc32"].get<uint32_t>(), crc32_z(0L, reinterpret_cast<const Bytef*>(bytes.data()), bytes.size()));
    for (unsigned char b : bytes) ASSERT_LT(b, 64) << "bits above m are set";
  }
  // An existing folder is refused and left as it was; nothing half-written appears.
  expect_failure("export --model " + q + " --out " + dir.file("codes"), "already exists");
  expect_failure("export --model " + q + " --out " + dir.file("no/such/parent/codes"), "does not exist");
  expect_failure("export --model " + model + " --out " + dir.file("codes2"), "not quantized");
  EXPECT_FALSE(std::filesystem::exists(dir.file("codes2")));
}

// Codes of 9 to 16 bits are exported as little-endian uint16, the manifest's step and ranges
// decode them to the weights the model computes with.
TEST_F(CliQuantEval, ExportOfTwelveBitCodesIsLittleEndianUint16) {
  const std::string q = dir.file("q12.pt");
  ASSERT_EQ(test_util::run_cli("quantize --model " + write_float_model(dir) + " --scheme u12-asym-tensor-round --out " + q).status, 0);
  ASSERT_EQ(test_util::run_cli("export --model " + q + " --out " + dir.file("codes")).status, 0);
  const auto manifest = read_json(dir.file("codes/manifest.json"));
  EXPECT_EQ(manifest["byte_order"], "little");
  io::ModelFile file = io::load_model_file(q);
  const auto qm = quant::load_from_model_file(file);
  qm.load_clean_weights();
  ASSERT_EQ(manifest["tensors"].size(), qm.tensors.size());
  for (size_t i = 0; i < qm.tensors.size(); ++i) {
    const auto& t = manifest["tensors"][i];
    EXPECT_EQ(t["container"], "uint16");
    EXPECT_EQ(t["shape"].get<std::vector<int64_t>>(), qm.tensors[i].codes.sizes().vec());
    EXPECT_FALSE(t["signed"].get<bool>());
    EXPECT_TRUE(t["asymmetric"].get<bool>());
    std::ifstream in(dir.file("codes/" + t["file"].get<std::string>()), std::ios::binary);
    std::vector<unsigned char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const at::Tensor codes = qm.tensors[i].codes.contiguous().to(at::kInt);
    ASSERT_EQ(static_cast<int64_t>(bytes.size()), 2 * codes.numel()) << qm.names[i];
    // Unsigned asymmetric (docs/quantization.md), with the manifest's own figures:
    // w = (clamp((code - 2^(m-1)) * step, -1, 1) + 1) / 2 * (hi - lo) + lo.
    const double lo = t["ranges"][0][0].get<double>(), hi = t["ranges"][0][1].get<double>();
    const double step = t["step"][0].get<double>();
    const at::Tensor weights = qm.params[i].detach().contiguous().flatten();
    const int32_t* c = codes.data_ptr<int32_t>();
    for (int64_t k = 0; k < codes.numel(); ++k) {
      const int code = bytes[2 * k] | (bytes[2 * k + 1] << 8);
      ASSERT_EQ(code, c[k]) << qm.names[i] << " element " << k;
      ASSERT_LT(code, 4096) << "bits above m are set";
      const double x = std::clamp((code - 2048) * step, -1.0, 1.0);
      ASSERT_NEAR((x + 1) / 2 * (hi - lo) + lo, weights[k].item<float>(), 1e-6) << qm.names[i] << " element " << k;
    }
  }
}

// A write that fails only when the stream is flushed (its tensor fits the stream's buffer) is an
// error too: no folder with a short .bin whose manifest crc32 describes the whole tensor.
TEST_F(CliQuantEval, ExportThatCannotWriteItsCodesLeavesNothing) {
  const std::string q = dir.file("q.pt");
  // One hidden unit: fc1.weight is 784 one-byte codes, few enough for libstdc++'s stream to buffer
  // them (it writes 1 KiB and more directly), so only closing the file meets the 512-byte limit.
  ASSERT_EQ(test_util::run_cli("quantize --model " + write_float_model(dir, 10, false, 1) + " --scheme rquant --out " + q).status, 0);
  rlimit before{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &before), 0);
  const auto handler = std::signal(SIGXFSZ, SIG_IGN);  // inherited: writes past the limit fail instead
  rlimit limited = before;
  limited.rlim_cur = 512;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &limited), 0);
  const test_util::CliResult r = test_util::run_cli("export --model " + q + " --out " + dir.file("codes"));
  setrlimit(RLIMIT_FSIZE, &before);
  std::signal(SIGXFSZ, handler);
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(test_util::contains(r.output, "cannot write")) << r.output;
  EXPECT_TRUE(test_util::contains(r.output, "fc1.weight.bin")) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("codes")));
  for (const auto& e : std::filesystem::directory_iterator(dir.path()))
    EXPECT_EQ(e.path().filename().string().find(".codes"), std::string::npos) << "left behind: " << e.path();
}

// `info` shows what a model file holds without any data set: the network, the quantization and
// every quantized parameter's range, as the file stores them.
TEST_F(CliQuantEval, InfoDescribesTheModelFile) {
  const std::string model = write_float_model(dir);
  const test_util::CliResult plain = test_util::run_cli("info --model " + model);
  ASSERT_EQ(plain.status, 0) << plain.output;
  EXPECT_NE(plain.output.find("mlp, normalization none, input 1x28x28, 10 classes"), std::string::npos) << plain.output;
  EXPECT_NE(plain.output.find("float model: not quantized"), std::string::npos) << plain.output;
  const std::string q = dir.file("q.pt");
  ASSERT_EQ(test_util::run_cli("quantize --model " + model + " --scheme u6-sym-channel-round --out " + q).status, 0);
  const test_util::CliResult r = test_util::run_cli("info --model " + q + " --json " + dir.file("info.json"));
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("quantized   u6-sym-channel-round (after training, by bitrobust quantize): "), std::string::npos)
      << r.output;
  const auto info = read_json(dir.file("info.json"));
  EXPECT_EQ(info["format"], "bitrobust-info-1");
  io::ModelFile file = io::load_model_file(q);
  EXPECT_EQ(info["meta"], file.meta);
  const auto qm = quant::load_from_model_file(file);
  ASSERT_EQ(info["quantized_parameters"].size(), qm.tensors.size());
  for (size_t i = 0; i < qm.tensors.size(); ++i) {
    const auto& p = info["quantized_parameters"][i];
    EXPECT_EQ(p["name"], qm.names[i]);
    EXPECT_NE(r.output.find(qm.names[i]), std::string::npos);
    EXPECT_EQ(p["bits"], 6);
    EXPECT_EQ(p["channels"].get<int64_t>(), qm.tensors[i].channels);
    EXPECT_EQ(p["lo"].get<double>(), qm.tensors[i].ranges.select(1, 0).min().item<double>());
    EXPECT_EQ(p["hi"].get<double>(), qm.tensors[i].ranges.select(1, 1).max().item<double>());
  }
  {  // A run stopped by --max-steps inside its first epoch does not read as three epochs trained.
    io::ModelFile trained = io::load_model_file(model);
    trained.meta["epochs"] = 3;
    trained.meta["steps"] = 20;
    io::save_model_file(dir.file("stopped.pt"), trained);
    const test_util::CliResult stopped = test_util::run_cli("info --model " + dir.file("stopped.pt"));
    ASSERT_EQ(stopped.status, 0) << stopped.output;
    EXPECT_TRUE(test_util::contains(stopped.output, "training    fashion-mnist, 3 epochs scheduled, 20 steps run, "))
        << stopped.output;
  }
  expect_failure("info --model " + dir.file("missing.pt"), "does not exist");
  expect_failure("info --model " + q + " --json " + q, "model file");  // an output that is the input
  // Every check runs before the report: a file that fails one prints its error and nothing else,
  // and so does an output that cannot be written.
  file.quant_ranges[0][0][0] = 1.0f;
  file.quant_ranges[0][0][1] = -1.0f;
  io::save_model_file(dir.file("bad.pt"), file);
  for (const std::string& args : {"info --model " + dir.file("bad.pt"),
                                  "info --model " + q + " --json " + dir.file("nowhere/info.json")}) {
    const test_util::CliResult bad = test_util::run_cli(args);
    EXPECT_EQ(bad.status, 1) << bad.output;
    EXPECT_EQ(bad.output.rfind("bitrobust: error: ", 0), 0u) << "printed before the error:\n" << bad.output;
    EXPECT_EQ(std::count(bad.output.begin(), bad.output.end(), '\n'), 1) << bad.output;
  }
}

TEST_F(CliQuantEval, QuantizeRejectsNanWeightsAndBadSchemes) {
  expect_failure("quantize --model " + write_float_model(dir, 10, true) + " --out " + dir.file("x.pt"), "fc1.bias");
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.pt")));
  const std::string model = write_float_model(dir);
  {  // A scheme string that does not parse is a bad value (status 2), named with what is wrong in it.
    const test_util::CliResult r = test_util::run_cli("quantize --model " + model + " --scheme u8-sym-planet-round --out " +
                                                      dir.file("x.pt"));
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_TRUE(test_util::contains(r.output, "--scheme: invalid quantization scheme 'u8-sym-planet-round': part 3 "
                                              "'planet'")) << r.output;
  }
  EXPECT_NE(test_util::run_cli("quantize --model " + model + " --bits 17 --out " + dir.file("x.pt")).status, 0);
  EXPECT_NE(test_util::run_cli("quantize --model " + model + " --clip -1 --out " + dir.file("x.pt")).status, 0);
  expect_failure("quantize --model " + model + " --scheme u8-sym-tensor-round --bits 4 --out " + dir.file("x.pt"),
                 "preset");
}

TEST_F(CliQuantEval, EvalValidatesItsArguments) {
  const std::string q = dir.file("q.pt");
  ASSERT_EQ(test_util::run_cli("quantize --model " + write_float_model(dir) + " --scheme rquant --out " + q).status, 0);
  expect_failure("eval --model " + q + " --rates 1.5", "outside [0, 1]");
  for (const std::string& nothing : {" --rates=", " --rates"}) {  // (CLI11: "1 required TEXT missing")
    const test_util::CliResult r = test_util::run_cli("eval --model " + q + nothing);
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_EQ(r.output, "bitrobust: error: --rates: no value given (see --help)\n") << nothing;
  }
  expect_failure("eval --model " + q + " --rates -1%", "outside [0, 1]");
  // Out-of-range integers are command-line errors (status 2), not saturated or wrapped values.
  for (const auto& [args, message] : std::vector<std::pair<std::string, std::string>>{
           {" --patterns 0", "--patterns: must be an integer in 1..1000000, got '0'"},
           {" --seed 99999999999999999999999", "--seed: must be an integer >= 0, got '99999999999999999999999', beyond the largest, 9223372036854775807"},
           {" --batch 99999999999999999999", "--batch: must be an integer >= 1, got '99999999999999999999', beyond the largest, 9223372036854775807"},
           {" --limit -1", "--limit: must be an integer >= 0, got '-1'"},
           {" --seed -99999999999999999999", "--seed: must be an integer >= 0, got '-99999999999999999999'"}}) {
    const test_util::CliResult r = test_util::run_cli("eval --model " + q + args);
    EXPECT_EQ(r.status, 2) << args << "\n" << r.output;
    EXPECT_EQ(r.output, "bitrobust: error: " + message + " (see --help)\n") << args;
  }
  expect_failure("eval --model " + q + " --seed 9223372036854775807 --patterns 2", "runs past the largest seed");
  // Integers are decimal, leading zeros and all (CLI11's own conversion would read 010 as octal 8).
  const test_util::CliResult seed10 =
      test_util::run_cli("pattern --model " + q + " --rate 1% --seed 010 --out " + dir.file("p10.txt"));
  ASSERT_EQ(seed10.status, 0) << seed10.output;
  EXPECT_TRUE(test_util::contains(seed10.output, "pattern of seed 10 ")) << seed10.output;
  expect_failure("eval --model " + q + " --error-model cosmic", "--error-model: unknown error model 'cosmic'");
  // Rate 0 alone draws no errors: its plot would be empty (found by a review); with a rate fixed
  // by the error model it has errors, and a point.
  expect_failure("eval --model " + q + " --rates 0 --plot " + dir.file("p0.svg"),
                 "--plot: no rate in --rates draws bit errors, so the plot of RErr against the rate would be empty");
  expect_failure("eval --model " + q + " --rates 0 --error-model random,0to1=0 --plot " + dir.file("p0.svg"),
                 "--plot: no rate in --rates draws bit errors");
  EXPECT_FALSE(std::filesystem::exists(dir.file("p0.svg")));
  EXPECT_EQ(test_util::run_cli("eval --model " + q + " --rates 0 --error-model random,0to1=1% --patterns 1 --limit 20 "
                               "--quiet --plot " + dir.file("p0.svg")).status, 0);
  EXPECT_TRUE(std::filesystem::exists(dir.file("p0.svg")));
  // Both directions fixed: every rate of --rates would give the same errors under its own label.
  expect_failure("eval --model " + q + " --error-model random,0to1=0.05%,1to0=0.05% --rates 0.01%,1%",
                 "--error-model: 'random,0to1=0.05%,1to0=0.05%' sets both the 0to1 and the 1to0 rate");
  expect_failure("pattern --model " + q + " --rate 1% --error-model msb,0to1=1%,1to0=0 --out " + dir.file("p2.txt"),
                 "--error-model: 'msb,0to1=1%,1to0=0' sets both");
  expect_failure("eval --model " + write_float_model(dir), "not quantized");
  {  // A choice outside the list is a command-line error (status 2), as every fixed choice.
    const test_util::CliResult r = test_util::run_cli("eval --model " + q + " --precision fp16");
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_EQ(r.output, "bitrobust: error: --precision: fp16 not in {fp32,tf32,bf16} (see --help)\n");
  }
  expect_failure("eval --model " + q + " --precision tf32", "TF32 is a CUDA tensor-core format");
  const std::string q4 = dir.file("q4.pt");
  expect_failure("quantize --model " + write_float_model(dir, 4) + " --scheme rquant --out " + q4 + " --dataset fashion-mnist",
                 "predicts 4 classes but data set fashion-mnist has 10");
}

TEST_F(CliQuantEval, EvalWritesSchemaAndASavedPatternReplaysExactly) {
  const std::string q = dir.file("q.pt");
  ASSERT_EQ(test_util::run_cli("quantize --model " + write_float_model(dir) + " --scheme rquant --bits 4 --out " + q).status, 0);
  // Failures name the option's file and say why (found by a review: "load_pattern: cannot open").
  expect_failure("eval --model " + q + " --replay " + dir.file("none.txt"),
                 "cannot read pattern file '" + dir.file("none.txt") + "': it does not exist");
  if (std::filesystem::is_character_file("/dev/full")) {
    expect_failure("pattern --model " + q + " --rate 1% --out /dev/full",
                   "cannot write pattern file (--out) /dev/full: " + std::string(std::strerror(ENOSPC)));
  }
  const test_util::CliResult r = test_util::run_cli("eval --model " + q + " --rates 0,0.5%,5% --patterns 3 --seed 7 --limit 300 --json " +
                          dir.file("e.json") + " --csv " + dir.file("e.csv") + " --plot " + dir.file("e.svg") + " --quiet");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("clean error"), std::string::npos);
  const auto j = read_json(dir.file("e.json"));
  EXPECT_EQ(j["scheme"], "u4-asym-tensor-round");
  EXPECT_EQ(j["seed"], 7);
  EXPECT_EQ(j["precision"], "fp32");  // the CPU's default
  EXPECT_EQ(j["activations"], "nchw");  // an MLP: no channels-last inference
  EXPECT_EQ(j["results"][0]["rerr_mean"].get<double>(), j["clean_error"].get<double>());
  // One point per rate above 0 and result: 2 in the sweep's plot, 4 in the comparison of two.
  const auto circles = [](const std::string& path) {
    std::ifstream in(path);
    const std::string svg((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    size_t n = 0;
    for (size_t at = svg.find("<circle"); at != std::string::npos; at = svg.find("<circle", at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(circles(dir.file("e.svg")), 2u);
  const test_util::CliResult compared =
      test_util::run_cli("compare " + dir.file("e.json") + " " + dir.file("e.json") + " --plot " + dir.file("c.svg"));
  EXPECT_EQ(compared.status, 0) << compared.output;
  EXPECT_EQ(circles(dir.file("c.svg")), 4u);
  // The same result twice: paired, every difference 0 (NOTE [Paired comparison]).
  EXPECT_NE(compared.output.find("+0.00  [+0.00, +0.00]  0 / 0 of 3"), std::string::npos) << compared.output;
  expect_failure("compare " + dir.file("e.json") + " --paired-with 2", "--paired-with 2 names a result beyond the 1 given");
  expect_failure("compare " + dir.file("e.json") + " --title Mine", "--title names the plot, and no --plot file is given");
  // The pattern of seed 8 (the second) at 5%, saved and replayed, gives the sweep's value exactly.
  ASSERT_EQ(test_util::run_cli("pattern --model " + q + " --rate 5% --seed 8 --out " + dir.file("p.txt")).status, 0);
  ASSERT_EQ(test_util::run_cli("eval --model " + q + " --limit 300 --replay " + dir.file("p.txt") + " --json " + dir.file("r.json")).status, 0);
  const auto replay = read_json(dir.file("r.json"));
  EXPECT_EQ(replay["rerr"].get<double>(), j["results"][2]["per_pattern"][1].get<double>());
  // ... on the images the sweep used, which both results name alike.
  for (const char* key : {"dataset", "split", "cifar_protocol", "limit", "examples", "data", "layers"}) {
    EXPECT_EQ(replay[key], j[key]) << key;
  }
  EXPECT_EQ(replay["bits_changed"].get<int64_t>(), j["results"][2]["bits_changed"][1].get<int64_t>());
  // Both name the weights they evaluated, whatever the file is called (found by a review: a retrained
  // file under the same name gave results that nothing told apart), and where they ran.
  for (const char* key : {"model_fingerprint", "model_seed", "device", "batch", "precision", "activations"}) {
    EXPECT_EQ(replay[key], j[key]) << key;
  }
  // The layout switch takes 0 or 1 only.
  ::setenv("BITROBUST_CHANNELS_LAST", "2", 1);
  expect_failure("eval --model " + q + " --rates 1% --patterns 1 --limit 30 --quiet",
                 "BITROBUST_CHANNELS_LAST must be 0 or 1 (or unset), got '2'");
  ::unsetenv("BITROBUST_CHANNELS_LAST");
  ASSERT_TRUE(j["model_fingerprint"].is_string());
  EXPECT_EQ(j["model_fingerprint"].get<std::string>().rfind("crc32 ", 0), 0u);
  EXPECT_TRUE(j["model_seed"].is_null());  // (the float model's file records no training seed)
  std::filesystem::copy_file(q, dir.file("renamed.pt"));
  ASSERT_EQ(test_util::run_cli("eval --model " + dir.file("renamed.pt") + " --rates 1% --patterns 1 --limit 30 --quiet "
                               "--precision bf16 --json " + dir.file("renamed.json")).status, 0);
  EXPECT_EQ(read_json(dir.file("renamed.json"))["model_fingerprint"], j["model_fingerprint"]);  // (not of the arithmetic)
  // Another model of the same layout: one float weight moved, quantized alike (a file's codes must
  // be those of its weights).
  io::ModelFile retrained = io::load_model_file(write_float_model(dir));
  {
    torch::NoGradGuard no_grad;
    retrained.net->named_parameters()["fc1.weight"][0][0] += 0.25;
  }
  quant::store_in_model_file(
      quant::quantize_model(*retrained.net, quant::QuantScheme::parse("u4-asym-tensor-round")), retrained);
  retrained.meta["seed"] = 5;
  io::save_model_file(dir.file("edited.pt"), retrained);
  const test_util::CliResult edited_eval = test_util::run_cli("eval --model " + dir.file("edited.pt") +
                                                              " --rates 1% --patterns 1 --limit 30 --quiet --json " +
                                                              dir.file("edited.json"));
  ASSERT_EQ(edited_eval.status, 0) << edited_eval.output;
  EXPECT_NE(read_json(dir.file("edited.json"))["model_fingerprint"], j["model_fingerprint"]);
  EXPECT_EQ(read_json(dir.file("edited.json"))["model_seed"], 5);
  // A pattern of some layers says so: in the file, in the replay's line and in its JSON.
  ASSERT_EQ(test_util::run_cli("pattern --model " + q + " --rate 5% --seed 8 --layers bias --out " + dir.file("pfc.txt")).status, 0);
  const test_util::CliResult fc = test_util::run_cli("eval --model " + q + " --limit 300 --replay " + dir.file("pfc.txt") +
                                                     " --json " + dir.file("rfc.json"));
  ASSERT_EQ(fc.status, 0) << fc.output;
  EXPECT_TRUE(test_util::contains(fc.output, ", layers 'bias', seed 8,")) << fc.output;
  EXPECT_EQ(read_json(dir.file("rfc.json"))["layers"], "bias");
  EXPECT_EQ(replay["drawn"], true);
  EXPECT_EQ(read_json(dir.file("rfc.json"))["drawn"], true);
  EXPECT_FALSE(test_util::contains(fc.output, "note:")) << fc.output;
  // An edited seed is replayed, but the result says the header does not describe the flips.
  std::ifstream original(dir.file("pfc.txt"));
  std::string text((std::istreambuf_iterator<char>(original)), std::istreambuf_iterator<char>());
  text.replace(text.find("seed 8\n"), 7, "seed 9\n");
  std::ofstream(dir.file("edited.txt")) << text;
  const test_util::CliResult edited = test_util::run_cli("eval --model " + q + " --limit 300 --replay " + dir.file("edited.txt") +
                                                         " --json " + dir.file("redited.json"));
  ASSERT_EQ(edited.status, 0) << edited.output;
  EXPECT_TRUE(test_util::contains(edited.output, "note: pattern file " + dir.file("edited.txt") +
                                                     " holds other flips than seed 9 draws at random(p=0.05) in these layers"))
      << edited.output;
  EXPECT_EQ(read_json(dir.file("redited.json"))["drawn"], false);
  EXPECT_EQ(read_json(dir.file("redited.json"))["rerr"], read_json(dir.file("rfc.json"))["rerr"]);
  EXPECT_LT(read_json(dir.file("rfc.json"))["bits_changed"].get<int64_t>(), replay["bits_changed"].get<int64_t>());
  // In bf16 the same sweep runs on a bfloat16 network and says so.
  ASSERT_EQ(test_util::run_cli("eval --model " + q + " --rates 0,5% --patterns 2 --seed 7 --limit 300 --precision bf16 --quiet --json " +
                               dir.file("b.json")).status, 0);
  const auto bf16 = read_json(dir.file("b.json"));
  EXPECT_EQ(bf16["precision"], "bf16");
  EXPECT_NEAR(bf16["clean_error"].get<double>(), j["clean_error"].get<double>(), 0.02);
  // Any accepted spelling of an error model is recorded under its canonical name.
  ASSERT_EQ(test_util::run_cli("eval --model " + q + " --rates 1% --patterns 1 --limit 100 --error-model stuck-at-1 "
                               "--quiet --json " + dir.file("s.json")).status, 0);
  EXPECT_EQ(read_json(dir.file("s.json"))["error_model"], "stuck_at_1");
  // A pattern made for other shapes (8 hidden units instead of 16) is refused, naming the parameter.
  const std::string other = dir.file("other.pt");
  ASSERT_EQ(test_util::run_cli("quantize --model " + write_float_model(dir, 10, false, 8) + " --scheme rquant --bits 4 --out " +
                               other).status, 0);
  expect_failure("eval --model " + other + " --limit 100 --replay " + dir.file("p.txt"), "when the pattern was made");
  std::ofstream(dir.file("bad.txt")) << "not a pattern\n";
  expect_failure("eval --model " + q + " --limit 100 --replay " + dir.file("bad.txt"), "bad.txt");
}

// Text from a file reaches the terminal only through printable(): a name in a pattern file or a
// field of a model file holding a terminal escape or a newline is shown as U+FFFD, in one line.
TEST_F(CliQuantEval, TextFromFilesIsPrintedWithoutControlCharacters) {
  const std::string q = dir.file("q.pt");
  ASSERT_EQ(test_util::run_cli("quantize --model " + write_float_model(dir) + " --scheme rquant --bits 4 --out " + q).status, 0);
  ASSERT_EQ(test_util::run_cli("pattern --model " + q + " --rate 1% --out " + dir.file("p.txt")).status, 0);
  std::string text;
  {
    std::ifstream in(dir.file("p.txt"));
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const size_t name = text.find(" fc1.weight ");
  ASSERT_NE(name, std::string::npos) << text;
  text.replace(name + 1, 3, "fc1\x1b[2J\xC2\x9B");
  std::ofstream(dir.file("escape.txt")) << text;
  const test_util::CliResult r = test_util::run_cli("eval --model " + q + " --limit 10 --replay " + dir.file("escape.txt"));
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_TRUE(test_util::contains(r.output, "fc1\xEF\xBF\xBD[2J\xEF\xBF\xBD.weight")) << r.output;
  EXPECT_EQ(r.output.find('\x1b'), std::string::npos) << r.output;
  // A model file's free-text field, as `info` shows it.
  io::ModelFile file = io::load_model_file(q);
  file.meta["epochs"] = 1;
  file.meta["augment"] = "crop\nforged line \x1b]0;title\x07";
  io::save_model_file(dir.file("m.pt"), file);
  const test_util::CliResult info = test_util::run_cli("info --model " + dir.file("m.pt"));
  ASSERT_EQ(info.status, 0) << info.output;
  EXPECT_TRUE(test_util::contains(info.output, "crop\xEF\xBF\xBD" "forged line \xEF\xBF\xBD]0;title\xEF\xBF\xBD, on "))
      << info.output;
  EXPECT_EQ(info.output.find('\x1b'), std::string::npos) << info.output;
}

// Another data set than the model's is evaluated with a note; quantize refuses it, as the error it
// measures is stored as the file's own test error.
TEST_F(CliQuantEval, AnotherDataSetThanTheModelsIsNotedAndQuantizeRefusesIt) {
  const std::string model = write_float_model(dir);  // fashion-mnist
  const std::string mnist = dir.file("mnist");
  std::filesystem::create_directories(mnist);
  bitrobust::testing::write_file(mnist + "/t10k-images-idx3-ubyte",
                                 bitrobust::testing::idx_images(5, 28, 28, bitrobust::testing::pattern_pixels(5, 28 * 28)));
  bitrobust::testing::write_file(mnist + "/t10k-labels-idx1-ubyte", bitrobust::testing::idx_labels({1, 2, 3, 4, 5}));
  const test_util::CliResult other = test_util::run_cli("test --model " + model + " --dataset mnist --data-root " + mnist);
  ASSERT_EQ(other.status, 0) << other.output;
  EXPECT_TRUE(test_util::contains(other.output, "note: model file " + model +
                                                    " was trained on fashion-mnist; evaluating on mnist (--dataset)\n"))
      << other.output;
  const test_util::CliResult own = test_util::run_cli("test --model " + model + " --dataset fashion-mnist --limit 20");
  ASSERT_EQ(own.status, 0) << own.output;
  EXPECT_FALSE(test_util::contains(own.output, "note:")) << own.output;
  expect_failure("quantize --model " + model + " --dataset mnist --data-root " + mnist + " --out " + dir.file("q.pt"),
                 "--dataset mnist: quantize records the test error in the model file, on the data set model file " +
                     model + " was trained on (fashion-mnist)");
  EXPECT_FALSE(std::filesystem::exists(dir.file("q.pt")));
}

// Only CIFAR-10 has split protocols: a model of another data set records none (it had recorded
// "holdout"), and train's JSON says "" as eval's does.
TEST_F(CliQuantEval, ModelsOfOtherDataSetsRecordNoCifarProtocol) {
  const std::string mnist = dir.file("mnist");
  std::filesystem::create_directories(mnist);
  for (const char* prefix : {"/train", "/t10k"}) {
    bitrobust::testing::write_file(mnist + prefix + "-images-idx3-ubyte",
                                   bitrobust::testing::idx_images(8, 28, 28, bitrobust::testing::pattern_pixels(8, 28 * 28)));
    bitrobust::testing::write_file(mnist + prefix + "-labels-idx1-ubyte", bitrobust::testing::idx_labels({0, 1, 2, 3, 4, 5, 6, 7}));
  }
  const std::string model = dir.file("mnist.pt"), json = dir.file("mnist.json");
  const test_util::CliResult trained = test_util::run_cli("train --dataset mnist --data-root " + mnist +
                                                          " --model mlp --epochs 1 --batch 4 --quiet --out " + model +
                                                          " --momentum 0.5 --weight-decay 0 --json " + json);
  ASSERT_EQ(trained.status, 0) << trained.output;
  const io::ModelFile file = io::load_model_file(model);
  EXPECT_FALSE(file.meta.contains("cifar_protocol"));
  std::ifstream in(json);
  const nlohmann::json summary = nlohmann::json::parse(in);
  EXPECT_EQ(summary["cifar_protocol"], "");
  // Every setting that changes the weights is recorded (found by a review: momentum and weight
  // decay were only in the checkpoint), and `info` shows them.
  for (const nlohmann::json* record : {&file.meta, &summary}) {
    EXPECT_EQ((*record)["momentum"], 0.5);
    EXPECT_EQ((*record)["weight_decay"], 0.0);
    EXPECT_EQ((*record)["device"], "cpu");
  }
  const test_util::CliResult info = test_util::run_cli("info --model " + model);
  EXPECT_TRUE(test_util::contains(info.output, "lr 0.05, momentum 0.5, weight decay 0.0, seed ")) << info.output;
  EXPECT_TRUE(test_util::contains(info.output, ", on cpu\n")) << info.output;
}

// `quantize`, `test` and `eval` at rate 0 report one error for a quantized model: that of its stored
// codes, not of the float weights the file was made from.
TEST_F(CliQuantEval, QuantizeTestAndEvalReportTheErrorOfTheStoredCodes) {
  const std::string q = dir.file("q2.pt");
  ASSERT_EQ(test_util::run_cli("quantize --model " + write_float_model(dir) + " --scheme rquant --bits 2 --out " + q +
                               " --json " + dir.file("q.json")).status, 0);
  ASSERT_EQ(test_util::run_cli("test --model " + q + " --json " + dir.file("t.json")).status, 0);
  const test_util::CliResult clean_only =
      test_util::run_cli("eval --model " + q + " --rates 0 --patterns 1 --quiet --json " + dir.file("e.json"));
  ASSERT_EQ(clean_only.status, 0) << clean_only.output;
  // No pass with errors ran: no speed of 0 images x patterns / s is reported.
  EXPECT_TRUE(test_util::contains(clean_only.output, "no pattern changed a bit (rate 0 is the clean model): nothing to time"))
      << clean_only.output;
  // The speed line counts every pattern at every rate with errors (2 x 2 here; rate 0 is no pass),
  // and a rate of 50% or more written as a fraction is pointed out (found by a review).
  const test_util::CliResult two_rates =
      test_util::run_cli("eval --model " + q + " --rates 0,0.6,1% --patterns 2 --limit 20 --quiet");
  ASSERT_EQ(two_rates.status, 0) << two_rates.output;
  EXPECT_TRUE(test_util::contains(two_rates.output, "20 images x 4 patterns (2 at each of 2 rates) in ")) << two_rates.output;
  EXPECT_TRUE(test_util::contains(
      two_rates.output, "note: --rates: '0.6' is a fraction of the bits, 60%; a percentage is written with % (0.6%)"))
      << two_rates.output;
  EXPECT_FALSE(test_util::contains(two_rates.output, "'1%' is a fraction")) << two_rates.output;
  const auto quantized = read_json(dir.file("q.json")), tested = read_json(dir.file("t.json")), swept = read_json(dir.file("e.json"));
  // quantize's errors are of the images test records (found by a review: it did not say which).
  for (const char* key : {"dataset", "split", "cifar_protocol", "examples", "data", "device", "activations"}) {
    EXPECT_EQ(quantized[key], tested[key]) << key;
  }
  EXPECT_EQ(tested["activations"], swept["activations"]);
  EXPECT_NE(quantized["test_error"].get<double>(), quantized["float_test_error"].get<double>()) << "2 bits change predictions";
  EXPECT_EQ(tested["test_error"].get<double>(), quantized["test_error"].get<double>());
  EXPECT_EQ(swept["clean_error"].get<double>(), quantized["test_error"].get<double>());
  // Each command's JSON names its kind, and compare refuses all but eval's by it.
  EXPECT_EQ(quantized["format"], "bitrobust-quantize-1");
  EXPECT_EQ(tested["format"], "bitrobust-test-1");
  EXPECT_EQ(swept["format"], "bitrobust-eval-1");
  expect_failure("compare " + dir.file("e.json") + " " + dir.file("t.json"),
                 "not a bitrobust eval result of format bitrobust-eval-1 (format: \"bitrobust-test-1\")");
}

// --layers: errors land only in the parameters it matches. At rate 1 every bit in use flips, so the
// count of changed bits is exactly the matched parameters' bits (8-bit codes, 16 hidden units).
TEST_F(CliQuantEval, EvalLayersConfinesErrorsToTheMatchedParameters) {
  const std::string q = dir.file("q.pt");
  ASSERT_EQ(test_util::run_cli("quantize --model " + write_float_model(dir) + " --scheme rquant --out " + q).status, 0);
  for (const auto& [layers, bits] : std::vector<std::pair<std::string, int64_t>>{
           {"'fc_out\\.weight'", 10 * 16 * 8}, {"'fc_out\\..*'", (10 * 16 + 10) * 8}, {"'.*bias'", (16 + 10) * 8}}) {
    const test_util::CliResult r = test_util::run_cli("eval --model " + q + " --rates 1 --patterns 1 --limit 100 --quiet --layers " +
                                                      layers + " --json " + dir.file("l.json"));
    ASSERT_EQ(r.status, 0) << layers << "\n" << r.output;
    EXPECT_EQ(read_json(dir.file("l.json"))["results"][0]["bits_changed"][0].get<int64_t>(), bits) << layers;
  }
  expect_failure("eval --model " + q + " --rates 1% --layers 'conv.*'", "matches no quantized parameter");
}

TEST_F(CliQuantEval, PatternCompareAndDeviceRefuseWhatTheyCannotUse) {
  const std::string q = dir.file("q.pt");
  ASSERT_EQ(test_util::run_cli("quantize --model " + write_float_model(dir) + " --scheme rquant --out " + q).status, 0);
  expect_failure("pattern --model " + q + " --rate 1%,2% --out " + dir.file("p.txt"), "--rate takes one rate, got '1%,2%'");
  expect_failure("pattern --model " + q + " --rate 150% --out " + dir.file("p.txt"), "outside [0, 1]");
  EXPECT_FALSE(std::filesystem::exists(dir.file("p.txt")));
  expect_failure("compare " + dir.file("none.json"), "result file " + dir.file("none.json") + " does not exist");
  std::ofstream(dir.file("text.json")) << "not json\n";
  expect_failure("compare " + dir.file("text.json"), "result file " + dir.file("text.json") + " is not valid JSON");
  for (const std::string& bits : {"1", "17"}) {
    const test_util::CliResult r = test_util::run_cli("quantize --model " + q + " --bits " + bits + " --out " + dir.file("x.pt"));
    EXPECT_EQ(r.status, 2) << r.output;
    EXPECT_EQ(r.output, "bitrobust: error: --bits: must be an integer in 2..16, got '" + bits + "' (see --help)\n");
  }
  if (!torch::cuda::is_available()) expect_failure("test --model " + q + " --device cuda", "--device cuda: this build has");
}

TEST_F(CliQuantEval, TrainRejectsBadRobustTrainingOptions) {
  const std::string out = " --dataset fashion-mnist --model mlp --epochs 1 --out " + dir.file("m.pt");
  expect_failure("train --randbet 1%" + out, "needs quantization-aware training");
  expect_failure("train --scheme rquant --randbet 2" + out, "outside [0, 1]");
  EXPECT_EQ(test_util::run_cli("train --scheme rquant --randbet 1% --randbet-mode sometimes" + out).status, 2);
  EXPECT_NE(test_util::run_cli("train --scheme rquant --clip 0" + out).status, 0);
  EXPECT_FALSE(std::filesystem::exists(dir.file("m.pt")));
}

namespace {
/// A tiny fake CIFAR-10 in dir (hold-out protocol: batches 1-4 of 6 images train, batch 5 tests);
/// returns its folder.
std::string write_tiny_cifar10(const test_util::TempDir& dir) {
  const std::string root = dir.file("cifar10");
  std::filesystem::create_directories(root);
  for (int k = 1; k <= 5; ++k) {
    bitrobust::testing::write_file(root + "/data_batch_" + std::to_string(k) + ".bin",
                        bitrobust::testing::cifar_records(bitrobust::testing::Bytes(6, static_cast<uint8_t>(k)), 10 * k));
  }
  return root;
}
}  // namespace

TEST(CliTrain, RecordsTheAugmentationItTrainedWith) {
  test_util::TempDir dir;
  const std::string common = "train --dataset cifar10 --data-root " + write_tiny_cifar10(dir) +
                             " --model mlp --epochs 1 --batch 8 --quiet --out ";
  struct Case {
    std::string flags, expected;
  };
  for (const Case& c : {Case{"", "crop4(mean)+flip+autoaugment+cutout16"}, Case{"--no-autoaugment", "crop4(mean)+flip+cutout16"},
                        Case{"--no-augment", "none"}}) {
    const std::string out = dir.file("m" + std::to_string(c.flags.size()) + ".pt");
    const test_util::CliResult r = test_util::run_cli(common + out + " " + c.flags);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find("augmentation " + c.expected), std::string::npos) << r.output;
    EXPECT_EQ(io::load_model_file(out).meta.value("augment", std::string()), c.expected) << c.flags;
    EXPECT_EQ(io::load_model_file(out).meta.value("steps", int64_t{-1}), 3) << "24 images, batch 8";
  }
}

// A network too large for the memory (LeNet at its widest, about a billion parameters) under a
// limit: one line saying so, with the size, not the allocator's source location; no file written.
// (One thread: OpenBLAS and OpenMP reserve address space per thread, which on a many-core machine
// could reach the limit before the program runs.)
TEST(CliTrain, AModelBeyondTheMemoryLimitIsOneOutOfMemoryLine) {
  test_util::TempDir dir;
  const test_util::CliResult r = test_util::run_cli(
      "train --dataset cifar10 --data-root " + write_tiny_cifar10(dir) +
          " --model lenet --width 4096 --max-steps 1 --batch 8 --no-augment --threads 1 --quiet --out " +
          dir.file("m.pt"),
      "ulimit -v 3000000; OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_EQ(r.output.rfind("bitrobust: error: out of memory: one block of ", 0), 0u) << r.output;
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
  EXPECT_EQ(r.output.find("enforce"), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir.file("m.pt")));
}

// Clipping plain normalization scales (which start at 1) is allowed but said; the re-parameterized
// forms, unclipped runs and runs that leave the scales unquantized say nothing.
TEST(CliTrain, SaysWhenClippingPlainNormalizationScales) {
  test_util::TempDir dir;
  const std::string common = "train --dataset cifar10 --data-root " + write_tiny_cifar10(dir) +
                             " --model mlp --epochs 1 --max-steps 1 --batch 8 --no-augment --quiet --out " +
                             dir.file("m.pt") + " ";
  struct Case {
    std::string flags;
    bool noted;
  };
  for (const Case& c : {Case{"--scheme rquant --clip 0.1", true}, Case{"--scheme u8-asym-tensor-round-clip0.1", true}, Case{"--norm bn --scheme rquant --clip 0.1", true},
                        Case{"--norm regn --scheme rquant --clip 0.1", false}, Case{"--scheme rquant", false},
                        Case{"--scheme rquant --clip 0.1 --quant-exclude '*norm*'", false}}) {
    std::filesystem::remove(dir.file("m.pt"));
    const test_util::CliResult r = test_util::run_cli(common + c.flags);
    ASSERT_EQ(r.status, 0) << c.flags << ": " << r.output;
    const std::string norm = c.flags.rfind("--norm bn", 0) == 0 ? "bn" : "gn";
    EXPECT_EQ(r.output.find("note: clipping at 0.1 also clips the scales of --norm " + norm + " (2 layers), which start at 1; --norm re" +
                            norm) != std::string::npos,
              c.noted)
        << c.flags << ": " << r.output;
  }
}

// RandBET at rate 0 (a control run) trains, with a note, since it is rarely what was meant.
TEST(CliTrain, RandBetAtRateZeroTrainsWithANote) {
  test_util::TempDir dir;
  const std::string common = "train --dataset cifar10 --data-root " + write_tiny_cifar10(dir) +
                             " --model mlp --batch 8 --no-augment --scheme rquant --max-steps 1 --out " + dir.file("m.pt");
  const std::string note = "note: --randbet 0 draws no bit errors: each perturbed pass runs on the clean weights";
  test_util::CliResult r = test_util::run_cli(common + " --randbet 0");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(test_util::contains(r.output, note)) << r.output;
  r = test_util::run_cli(common + " --randbet 1%");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_FALSE(test_util::contains(r.output, "--randbet 0")) << r.output;
  r = test_util::run_cli(common + " --randbet 0 --randbet-error-model random,0to1=1%");  // errors in one direction
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_FALSE(test_util::contains(r.output, note)) << r.output;
  r = test_util::run_cli(common + " --randbet 0 --randbet-error-model random,0to1=0");  // zero in both
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(test_util::contains(r.output, note)) << r.output;
}

// The curriculum is recorded in the model file, and a checkpoint resumes only under the same one.
TEST(CliTrain, RandBetCurriculumIsRecordedAndPartOfTheRunsSettings) {
  test_util::TempDir dir;
  const std::string common = "train --dataset cifar10 --data-root " + write_tiny_cifar10(dir) +
                             " --model mlp --batch 8 --no-augment --scheme rquant --clip 0.1 --randbet 1% "
                             "--out " + dir.file("m.pt") + " ";
  test_util::CliResult r = test_util::run_cli(common + "--epochs 1 --randbet-curriculum reference --randbet-start 100");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("the reference's curriculum, threshold 100"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("img/s  bit errors in 2 of 3 steps"), std::string::npos) << "the epoch's line\n" << r.output;
  const nlohmann::json randbet = io::load_model_file(dir.file("m.pt")).meta["randbet"];
  EXPECT_EQ(randbet["curriculum"], "reference");
  EXPECT_EQ(randbet["perturbed_steps"], 2) << "3 steps; the first never has errors";
  r = test_util::run_cli("info --model " + dir.file("m.pt"));
  EXPECT_NE(r.output.find("mode average, the reference's curriculum, threshold 100.0 (2 perturbed steps)"), std::string::npos)
      << r.output;
  EXPECT_TRUE(test_util::contains(r.output, " (quantization-aware training): ")) << r.output;
  std::filesystem::remove(dir.file("m.pt"));
  std::filesystem::remove(dir.file("m.pt.ckpt"));
  ASSERT_EQ(test_util::run_cli(common + "--epochs 2 --max-steps 3").status, 0);  // "once", stopped after epoch 1
  ASSERT_TRUE(std::filesystem::exists(dir.file("m.pt.ckpt")));
  r = test_util::run_cli(common + "--epochs 2 --resume --randbet-curriculum reference");
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.output.find("belongs to a run with other settings (randbet"), std::string::npos) << r.output;
  r = test_util::run_cli(common + "--epochs 2 --resume");
  EXPECT_EQ(r.status, 0) << r.output;
  EXPECT_EQ(io::load_model_file(dir.file("m.pt")).meta["randbet"]["curriculum"], "once");
}

// A checkpoint resumes only with the thread count it was trained with (on the CPU a step's float sums
// depend on it) and on the same images (same file names and counts may hold others); the model
// file records both.
TEST(CliTrain, ResumeNeedsTheSameThreadCountAndImages) {
  test_util::TempDir dir;
  const std::string root = write_tiny_cifar10(dir);
  const std::string other = dir.file("other");  // the same files, one pixel changed
  std::filesystem::create_directories(other + "/cifar10");
  for (const auto& entry : std::filesystem::directory_iterator(root)) {
    std::filesystem::copy_file(entry.path(), other + "/cifar10/" + entry.path().filename().string());
  }
  {
    std::fstream f(other + "/cifar10/data_batch_2.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put(static_cast<char>(77));
  }
  const std::string common = "train --dataset cifar10 --model mlp --batch 8 --no-augment --epochs 2 --quiet --out " +
                             dir.file("m.pt") + " ";
  ASSERT_EQ(test_util::run_cli(common + "--data-root " + root + " --threads 1 --max-steps 3").status, 0);
  test_util::CliResult r = test_util::run_cli(common + "--data-root " + root + " --threads 2 --resume");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("belongs to a run with other settings (threads 1 -> 2)"), std::string::npos) << r.output;
  r = test_util::run_cli(common + "--data-root " + other + " --threads 1 --resume");
  EXPECT_EQ(r.status, 1) << r.output;
  EXPECT_NE(r.output.find("belongs to a run with other settings (data \"crc32 "), std::string::npos) << r.output;
  r = test_util::run_cli(common + "--data-root " + root + " --threads 1 --resume");
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json meta = io::load_model_file(dir.file("m.pt")).meta;
  EXPECT_EQ(meta["threads"], 1);
  EXPECT_EQ(meta["train_data"].get<std::string>().rfind("crc32 ", 0), 0u) << meta.dump();
}

namespace {
/// Whether two model files hold the same parameters, bit for bit.
bool same_parameters(const std::string& a, const std::string& b) {
  const auto pa = io::load_model_file(a).net->parameters(), pb = io::load_model_file(b).net->parameters();
  if (pa.size() != pb.size()) return false;
  for (size_t i = 0; i < pa.size(); ++i) {
    if (!torch::equal(pa[i], pb[i])) return false;
  }
  return true;
}
}  // namespace

// NOTE [OpenBLAS core]: the kernels chosen at start compute, bit for bit, what they compute when
// OpenBLAS is given them as it loads (OPENBLAS_CORETYPE); where bitrobust replaced OpenBLAS's own
// choice, that choice trains other weights (so the comparison does tell kernels apart).
TEST(CliTrain, OpenBlasKernelsChosenAtStartEqualThoseGivenAtLoad) {
  const test_util::CliResult version = test_util::run_cli("--version");
  ASSERT_EQ(version.status, 0) << version.output;
  // "...; OpenBLAS 0.3.21, Cooperlake kernels (chosen by bitrobust, where OpenBLAS took this CPU for a Prescott)"
  const size_t blas = version.output.find("; OpenBLAS ");
  if (blas == std::string::npos) GTEST_SKIP() << "the BLAS here is not OpenBLAS: " << version.output;
  const size_t comma = version.output.find(", ", blas), kernels = version.output.find(" kernels (chosen by ", blas);
  ASSERT_NE(kernels, std::string::npos) << version.output;
  const std::string core = version.output.substr(comma + 2, kernels - comma - 2);
  // The program itself chooses (a main without the call would run OpenBLAS's own Prescott here).
  const CpuFeatures features = this_cpu_features();
  if (features.intel && features.avx2_and_fma && std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    EXPECT_TRUE(openblas_core_has_avx2_kernels(core)) << version.output;
  }
  test_util::TempDir dir;
  const std::string common = "train --dataset cifar10 --data-root " + write_tiny_cifar10(dir) +
                             " --model mlp --max-steps 2 --batch 8 --no-augment --quiet --out ";
  ASSERT_EQ(test_util::run_cli(common + dir.file("start.pt")).status, 0);
  ASSERT_EQ(test_util::run_cli(common + dir.file("load.pt"), "OPENBLAS_CORETYPE=" + core + " ").status, 0);
  EXPECT_TRUE(same_parameters(dir.file("start.pt"), dir.file("load.pt"))) << core;
  const std::string took = "where OpenBLAS took this CPU for a ";
  const size_t replaced = version.output.find(took);
  if (replaced == std::string::npos) return;  // OpenBLAS knew this CPU
  const std::string own = version.output.substr(replaced + took.size(),
                                                version.output.find(')', replaced) - replaced - took.size());
  ASSERT_EQ(test_util::run_cli(common + dir.file("own.pt"), "OPENBLAS_CORETYPE=" + own + " ").status, 0);
  EXPECT_FALSE(same_parameters(dir.file("start.pt"), dir.file("own.pt"))) << own << " against " << core;
}

// Results record the CPU and its kernels (versions.cpu); a resume on other ones is allowed but said,
// since the README promises an uninterrupted run's weights only on the same kernels.
TEST(CliTrain, RecordsTheCpuAndSaysWhenAResumeRunsOnOtherKernels) {
  test_util::TempDir dir;
  const std::string model = dir.file("m.pt");
  const std::string common = "train --dataset cifar10 --data-root " + write_tiny_cifar10(dir) +
                             " --model mlp --batch 8 --no-augment --epochs 2 --out " + model + " ";
  test_util::CliResult r =
      test_util::run_cli(common + "--max-steps 3 --quiet --json " + dir.file("m.json"), "ONEDNN_MAX_CPU_ISA=AVX2 ");
  ASSERT_EQ(r.status, 0) << r.output;
  std::ifstream in(dir.file("m.json"));
  const nlohmann::json cpu = nlohmann::json::parse(in)["versions"]["cpu"];
  EXPECT_EQ(cpu["kernel_settings"]["ONEDNN_MAX_CPU_ISA"], "AVX2") << cpu.dump();
  EXPECT_FALSE(cpu.value("aten_kernels", std::string()).empty()) << cpu.dump();
  EXPECT_EQ(cpu.contains("blas"), cpu.contains("blas_chosen_by")) << cpu.dump();
  EXPECT_EQ(io::load_model_file(model).meta["versions"]["cpu"], cpu);
  const std::string note = "note: checkpoint " + model + ".ckpt was written on another CPU or with other kernels (";
  // (the variable taken away, wherever these tests run)
  const std::string unset = "unset ONEDNN_MAX_CPU_ISA; ";
  r = test_util::run_cli(common + "--resume", unset);
  ASSERT_EQ(r.status, 0) << r.output;
  const size_t noted = r.output.find(note);
  ASSERT_NE(noted, std::string::npos) << r.output;
  // (the checkpoint's description, before this run's, names the setting)
  EXPECT_LT(r.output.find("; ONEDNN_MAX_CPU_ISA=AVX2", noted), r.output.find(" than this run's (", noted)) << r.output;
  // The same kernels: nothing to say.
  ASSERT_EQ(test_util::run_cli(common + "--max-steps 3 --quiet", unset).status, 0);
  r = test_util::run_cli(common + "--resume", unset);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("resuming from " + model + ".ckpt after epoch 1"), std::string::npos) << r.output;
  EXPECT_EQ(r.output.find("note: checkpoint"), std::string::npos) << r.output;
  r = test_util::run_cli("info --model " + model);
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("\n  cpu         "), std::string::npos) << r.output;
}

// Resuming a run whose checkpoint already holds every epoch trains nothing: the model file and JSON
// keep the last epoch's loss (from the checkpoint) and report no training time or speed, not zeros.
// --momentum 0 trains (plain SGD: LibTorch refuses Nesterov without momentum).
TEST(CliTrain, ResumingAFinishedRunReportsNoTrainingInsteadOfZeros) {
  test_util::TempDir dir;
  const std::string common = "train --dataset cifar10 --data-root " + write_tiny_cifar10(dir) +
                             " --model mlp --batch 8 --no-augment --epochs 2 --momentum 0 --out " + dir.file("m.pt") +
                             " --json " + dir.file("m.json") + " ";
  test_util::CliResult r = test_util::run_cli(common);
  ASSERT_EQ(r.status, 0) << r.output;
  const nlohmann::json first = read_json(dir.file("m.json"));
  ASSERT_TRUE(first["final_train_loss"].is_number()) << first;
  EXPECT_GT(first["train_seconds"].get<double>(), 0.0);
  r = test_util::run_cli(common + "--resume");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("nothing left to train (the checkpoint holds all 2 epochs)"), std::string::npos) << r.output;
  const nlohmann::json again = read_json(dir.file("m.json"));
  EXPECT_EQ(again["final_train_loss"], first["final_train_loss"]);
  EXPECT_EQ(again["test_error"], first["test_error"]);
  EXPECT_EQ(again["steps"], 6);
  for (const char* key : {"train_seconds", "train_images_per_second", "train_steady_images_per_second"}) {
    EXPECT_TRUE(again[key].is_null()) << key << ": " << again[key];
  }
  r = test_util::run_cli("info --model " + dir.file("m.pt"));
  EXPECT_EQ(r.status, 0) << r.output;
  // A run stopped by --max-steps at an epoch's end, resumed with the same limit: nothing to train,
  // and no epoch is counted or reported with a loss of 0.
  const std::string limited = "train --dataset cifar10 --data-root " + dir.file("cifar10") +
                              " --model mlp --batch 8 --no-augment --epochs 4 --max-steps 6 --out " + dir.file("s.pt") +
                              " --json " + dir.file("s.json") + " ";
  ASSERT_EQ(test_util::run_cli(limited).status, 0);
  const nlohmann::json stopped = read_json(dir.file("s.json"));
  r = test_util::run_cli(limited + "--resume");
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_NE(r.output.find("nothing trained: --max-steps 6 reached (2 of 4 epochs)"), std::string::npos) << r.output;
  const nlohmann::json resumed = read_json(dir.file("s.json"));
  EXPECT_EQ(resumed["steps"], 6);
  EXPECT_EQ(resumed["final_train_loss"], stopped["final_train_loss"]);
  EXPECT_TRUE(resumed["train_seconds"].is_null());
  // A limit below the checkpoint's steps cannot be met: refused, not a model recording more steps.
  const std::string lower = "train --dataset cifar10 --data-root " + dir.file("cifar10") +
                            " --model mlp --batch 8 --no-augment --epochs 4 --max-steps 5 --out " + dir.file("s.pt") +
                            " --resume";
  expect_failure(lower, "--max-steps 5 is below the 6 steps checkpoint " + dir.file("s.pt") + ".ckpt holds");
  // And a checkpoint given where a model file belongs is named as what it is.
  expect_failure("info --model " + dir.file("s.pt") + ".ckpt", "is a training checkpoint (what `train --resume` continues from)");
}

// Sizes the architecture does not have are refused before any data are read.
TEST(CliTrain, SizesTheArchitectureLacksAreErrors) {
  test_util::TempDir dir;
  const std::string common = "train --dataset cifar10 --data-root " + dir.file("nowhere") + " --epochs 1 --out " +
                             dir.file("m.pt") + " ";
  expect_failure(common + "--model mlp --width 64", "--width 64: mlp has no base width");
  expect_failure(common + "--model lenet --depth 16", "--depth and --widen set WRN's depth and widen factor: they do not apply to lenet");
  EXPECT_FALSE(std::filesystem::exists(dir.file("m.pt")));
}

// The protocol a model was trained with is its default at test time; an explicit --cifar-protocol,
// holdout included, overrides it.
TEST(CliTest, ExplicitCifarProtocolOverridesTheModelFiles) {
  test_util::TempDir dir;
  const std::string root = dir.file("cifar10");
  std::filesystem::create_directories(root);
  for (int k = 1; k <= 5; ++k) {  // batch 5 (the hold-out test set) has 5 images
    bitrobust::testing::write_file(root + "/data_batch_" + std::to_string(k) + ".bin",
                                   bitrobust::testing::cifar_records(bitrobust::testing::Bytes(k, 1), 10 * k));
  }
  bitrobust::testing::write_file(root + "/test_batch.bin",  // the official test set has 7
                                 bitrobust::testing::cifar_records(bitrobust::testing::Bytes(7, 2), 100));
  const std::string model = dir.file("m.pt");
  const std::string data = " --data-root " + root + " --quiet";
  const test_util::CliResult trained = test_util::run_cli("train --dataset cifar10 --cifar-protocol official --model mlp "
                                                          "--epochs 3 --max-steps 5 --batch 8 --no-augment --out " + model + data +
                                                          " --json /dev/stdout");
  ASSERT_EQ(trained.status, 0) << trained.output;
  // A --json that is a pipe is written in place after the result line, as eval's follows its table.
  const size_t saved = trained.output.find("; saved " + model), json = trained.output.find("\n{\n");
  ASSERT_NE(saved, std::string::npos) << trained.output;
  ASSERT_NE(json, std::string::npos) << trained.output;
  EXPECT_LT(saved, json);
  EXPECT_EQ(nlohmann::json::parse(trained.output.substr(json + 1))["steps"], 5);
  EXPECT_EQ(nlohmann::json::parse(trained.output.substr(json + 1))["format"], "bitrobust-train-1");
  EXPECT_EQ(nlohmann::json::parse(trained.output.substr(json + 1))["cifar_protocol"], "official");
  // 1 + 2 + 3 + 4 + 5 = 15 training images: 2 steps per epoch; --max-steps 5 stops in epoch 3.
  // Its progress line shows the one step it ran and why (it had shown 2/2); --resume with no
  // checkpoint yet says that it trains from the start.
  const test_util::CliResult progress = test_util::run_cli(
      "train --dataset cifar10 --cifar-protocol official --model mlp --epochs 3 --max-steps 5 --batch 8 --no-augment "
      "--resume --data-root " + root + " --out " + dir.file("p.pt"));
  ASSERT_EQ(progress.status, 0) << progress.output;
  EXPECT_TRUE(test_util::contains(progress.output, "note: --resume: no checkpoint " + dir.file("p.pt") + ".ckpt yet"))
      << progress.output;
  EXPECT_TRUE(test_util::contains(progress.output, "epoch 2/3 2/2  ")) << progress.output;
  EXPECT_TRUE(test_util::contains(progress.output, "epoch 3/3 1/2  ")) << progress.output;
  EXPECT_TRUE(test_util::contains(progress.output, "  (stopped: --max-steps 5)\n")) << progress.output;
  EXPECT_FALSE(test_util::contains(progress.output, "epoch 2/3 2/2  (stopped")) << progress.output;
  // A limit that falls on an epoch's end, with epochs left, says so too (4 steps: epochs 1 and 2).
  const test_util::CliResult at_end = test_util::run_cli(
      "train --dataset cifar10 --cifar-protocol official --model mlp --epochs 3 --max-steps 4 --batch 8 --no-augment "
      "--data-root " + root + " --out " + dir.file("e.pt"));
  ASSERT_EQ(at_end.status, 0) << at_end.output;
  const size_t epoch2 = at_end.output.find("epoch 2/3 2/2  ");
  ASSERT_NE(epoch2, std::string::npos) << at_end.output;
  const std::string line2 = at_end.output.substr(epoch2, at_end.output.find('\n', epoch2) - epoch2);
  EXPECT_TRUE(line2.size() > 24 && line2.substr(line2.size() - 24) == "(stopped: --max-steps 4)") << line2;
  EXPECT_EQ(at_end.output.find("(stopped"), at_end.output.find("(stopped", epoch2)) << "only epoch 2's line\n"
                                                                                     << at_end.output;
  EXPECT_FALSE(test_util::contains(at_end.output, "epoch 3/3")) << at_end.output;
  const io::ModelFile file = io::load_model_file(model);
  EXPECT_EQ(file.meta["epochs"], 3);
  EXPECT_EQ(file.meta["steps"], 5);
  struct Case {
    std::string flags;
    std::string expected;
  };
  for (const Case& c : {Case{"", "of 7 cifar10 test images misclassified; official protocol)"},
                        Case{"--cifar-protocol official", "of 7 cifar10 test images misclassified; official protocol)"},
                        Case{"--cifar-protocol holdout --split train",
                             "of 10 cifar10 train images misclassified; holdout protocol: training batches 1-4)"}}) {
    const test_util::CliResult r = test_util::run_cli("test --model " + model + data + " " + c.flags);
    ASSERT_EQ(r.status, 0) << r.output;
    EXPECT_NE(r.output.find(c.expected), std::string::npos) << c.flags << ": " << r.output;
  }
  // Batch 5, holdout's test set, is among the images an official (or jpeg) model was trained on.
  expect_failure("test --model " + model + data + " --cifar-protocol holdout",
                 "--cifar-protocol holdout tests on batch 5, on which model file " + model + " was trained (its official "
                 "protocol trains on batches 1-5): use --cifar-protocol official, or --split train");
  // The data files are inputs too: no output may overwrite them.
  const auto size_before = std::filesystem::file_size(root + "/data_batch_5.bin");
  expect_failure("test --model " + model + data + " --split train --cifar-protocol official --json " + root +
                     "/data_batch_5.bin",
                 "cannot write --json file " + root + "/data_batch_5.bin: it is the data file this command reads");
  expect_failure("train --dataset cifar10 --model mlp --epochs 1 --no-augment --out " + dir.file("t.pt") + data +
                     " --checkpoint " + root + "/data_batch_1.bin",
                 "cannot write checkpoint " + root + "/data_batch_1.bin: it is the data file");
  EXPECT_EQ(std::filesystem::file_size(root + "/data_batch_5.bin"), size_before);
  // BatchNorm cannot train on a last batch of one image: 1 + 2 + 3 + 4 = 10 training images, batch 3.
  expect_failure("train --dataset cifar10 --model mlp --norm bn --epochs 1 --batch 3 --no-augment --out " +
                     dir.file("bn.pt") + data,
                 "--batch 3 leaves a last batch of 1 image (10 training images), which BatchNorm cannot train on");
  // Nor on batches of one image (10 % 1 == 0: the last-batch check alone would let it run).
  expect_failure("train --dataset cifar10 --model mlp --norm rebn --epochs 1 --batch 1 --no-augment --out " +
                     dir.file("bn.pt") + data,
                 "--batch 1 with --norm rebn: BatchNorm cannot train on batches of 1 image");
  EXPECT_FALSE(std::filesystem::exists(dir.file("bn.pt")));
  // A batch larger than the training set (one partial batch of all of it) is refused.
  expect_failure("train --dataset cifar10 --model mlp --epochs 1 --batch 11 --no-augment --out " + dir.file("big.pt") + data,
                 "--batch 11 is larger than the 10 training images");
  EXPECT_FALSE(std::filesystem::exists(dir.file("big.pt")));
}

TEST(CliTest, AModelFileNamingAnUnknownDataSetIsNamed) {
  test_util::TempDir dir;
  io::ModelFile f = io::load_model_file(write_float_model(dir));
  f.meta["dataset"] = "imagenet";
  io::save_model_file(dir.file("odd.pt"), f);
  expect_failure("test --model " + dir.file("odd.pt"),
                 "model file " + dir.file("odd.pt") + " names an unknown data set 'imagenet': pass --dataset");
  // The same for the CIFAR-10 protocol it was trained under (a default of test and eval).
  f.meta["dataset"] = "cifar10";
  f.meta["cifar_protocol"] = "xx";
  io::save_model_file(dir.file("odd_protocol.pt"), f);
  expect_failure("test --model " + dir.file("odd_protocol.pt"),
                 "model file " + dir.file("odd_protocol.pt") +
                     ": metadata field 'cifar_protocol' must be holdout, jpeg or official, got \"xx\"");
}
