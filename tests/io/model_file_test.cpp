#include "bitrobust/io/model_file.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <torch/torch.h>

#include <csignal>
#include <fstream>
#include <functional>
#include <iterator>
#include <tuple>

#include "bitrobust/common/error.h"
#include "bitrobust/config.h"
#include "bitrobust/io/zip_checksums.h"
#include "bitrobust/quant/model_quantization.h"
#include "archive_util.h"
#include "model_fixtures.h"
#include "test_util.h"

using namespace bitrobust;

TEST(ModelFile, RoundTripKeepsSpecWeightsMetaAndCodes) {
  test_util::TempDir dir;
  io::ModelFile f;
  f.spec.arch = "lenet";
  f.spec.norm = "rebn";
  f.net = models::build_model(f.spec);
  {
    torch::NoGradGuard g;
    for (auto& p : f.net->parameters()) p.uniform_(-1, 1);
    // BatchNorm statistics unlike a fresh network's (mean 0, variance 1), each buffer its own, so
    // that a buffer left unsaved or loaded into another layer shows.
    for (auto& item : f.net->named_buffers()) {
      if (item.key().find("running_mean") != std::string::npos) item.value().normal_();
      if (item.key().find("running_var") != std::string::npos) item.value().uniform_(0.5, 2.0);
    }
  }
  f.meta = {{"dataset", "fashion-mnist"}, {"seed", 3}, {"test_error", 0.125}};
  f.meta["quantization"] = {{"scheme", "x"}, {"params", {{{"name", "conv1.weight"}}}}};
  f.quant_codes.push_back(torch::randint(0, 255, {4, 5}).to(torch::kByte));
  f.quant_ranges.push_back(torch::tensor({{-1.0f, 1.0f}}));
  const auto path = dir.file("m.pt");
  io::save_model_file(path, f);
  // Written through a uniquely named temporary file, renamed over the target: nothing else is left.
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) files += entry.is_regular_file();
  EXPECT_EQ(files, 1);
  const auto g = io::load_model_file(path);
  EXPECT_EQ(g.spec.to_json(), f.spec.to_json());
  EXPECT_EQ(g.meta["seed"], 3);
  EXPECT_DOUBLE_EQ(g.meta["test_error"].get<double>(), 0.125);
  EXPECT_TRUE(g.meta.contains("versions"));
  auto a = f.net->named_parameters();
  for (const auto& item : g.net->named_parameters()) EXPECT_TRUE(torch::equal(item.value(), a[item.key()]));
  auto ab = f.net->named_buffers();
  int statistics = 0;
  for (const auto& item : g.net->named_buffers()) {
    EXPECT_TRUE(torch::equal(item.value(), ab[item.key()])) << item.key();
    statistics += item.key().find("running_") != std::string::npos;
  }
  EXPECT_GE(statistics, 4);  // (rebn LeNet: mean and variance of at least two norms)
  nlohmann::json written = g.meta;
  written.erase("versions");
  written.erase("spec");  // (compared above)
  EXPECT_EQ(written, f.meta);
  ASSERT_EQ(g.quant_codes.size(), 1u);
  EXPECT_TRUE(torch::equal(g.quant_codes[0], f.quant_codes[0]));
  EXPECT_TRUE(torch::equal(g.quant_ranges[0], f.quant_ranges[0]));
}

TEST(ModelFile, BadFilesGiveClearErrors) {
  test_util::TempDir dir;
  auto expect_error = [](const std::string& path, const std::string& part) {
    try {
      io::load_model_file(path);
      ADD_FAILURE() << "no error for " << path;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  expect_error(dir.file("missing.pt"), "does not exist");
  { std::ofstream(dir.file("junk.pt")) << "not a model"; }
  expect_error(dir.file("junk.pt"), "model file " + dir.file("junk.pt") + " is not a readable archive");
  // A truncated real file.
  io::ModelFile f;
  f.net = models::build_model(f.spec);
  io::save_model_file(dir.file("ok.pt"), f);
  const auto size = std::filesystem::file_size(dir.file("ok.pt"));
  std::filesystem::copy_file(dir.file("ok.pt"), dir.file("cut.pt"));
  std::filesystem::resize_file(dir.file("cut.pt"), size / 2);
  expect_error(dir.file("cut.pt"), "cut.pt");
  // A Torch archive that is not ours.
  torch::serialize::OutputArchive other;
  other.write("x", torch::ones({2}));
  other.save_to(dir.file("other.pt"));
  expect_error(dir.file("other.pt"), "not a bitrobust model");
  // Unwritable destination.
  EXPECT_THROW(io::save_model_file(dir.file("no/such/dir/m.pt"), f), Error);
}

namespace {
void expect_load_error(const std::string& path, const std::string& part, bool quantized = false) {
  try {
    io::ModelFile f = io::load_model_file(path);
    if (quantized) quant::load_from_model_file(f);
    ADD_FAILURE() << "no error for " << path;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << "the message must name the file: " << e.what();
  }
}

io::ModelFile quantized_file() { return test_util::quantized_model_file(4); }
}  // namespace

TEST(ModelFile, ADataRecordShorterThanItsTensorIsAnError) {
  // NOTE [Damaged model files]: rewrite a good file with its largest data record cut to 16 bytes,
  // the zip itself intact. LibTorch would hand out tensors reading past their data.
  test_util::TempDir dir;
  io::ModelFile f;
  f.spec = test_util::tiny_mlp_spec(8);
  f.net = models::build_model(f.spec);
  io::save_model_file(dir.file("ok.pt"), f);
  ASSERT_GT(test_util::copy_archive(dir.file("ok.pt"), dir.file("short.pt"), /*cut=*/true), 64u);
  // The same when the bytes cut are added to another record, or as a record of their own: the
  // records' total is then what the tensors need, but not each record.
  test_util::copy_archive(dir.file("ok.pt"), dir.file("padded.pt"), true, false, test_util::MakeUp::PadAnother);
  test_util::copy_archive(dir.file("ok.pt"), dir.file("extra.pt"), true, false, test_util::MakeUp::ExtraRecord);
  // The pickle's check ties each storage to its record (NOTE [Archive pickles]) ...
  for (const char* name : {"short.pt", "padded.pt", "extra.pt"}) expect_load_error(dir.file(name), "does not hold");
  // ... and the tally after LibTorch's load catches the same when that check is skipped.
  struct Unset {
    ~Unset() { ::unsetenv("BITROBUST_TRUST_ARCHIVES"); }
  } unset;
  ::setenv("BITROBUST_TRUST_ARCHIVES", "1", 1);
  expect_load_error(dir.file("short.pt"), "damaged file");
  expect_load_error(dir.file("padded.pt"), "do not match its");
  expect_load_error(dir.file("extra.pt"), "do not match its");
  ::unsetenv("BITROBUST_TRUST_ARCHIVES");
  // The copy with every record whole loads (the rewrite itself is sound).
  test_util::copy_archive(dir.file("ok.pt"), dir.file("whole.pt"), /*cut=*/false);
  EXPECT_NO_THROW(io::load_model_file(dir.file("whole.pt")));
}

// A stride of 0 (one value repeated along a dimension, as a pickle edited by hand can make) is an
// error; empty tensors, whose storages have no bytes and no address, load.
TEST(ModelFile, TensorsRepeatingTheirDataAreAnErrorButEmptyOnesLoad) {
  test_util::TempDir dir;
  io::ModelFile f;
  f.spec = test_util::tiny_mlp_spec(8);
  f.net = models::build_model(f.spec);
  {
    torch::NoGradGuard no_grad;
    torch::Tensor w = f.net->parameters().front();
    w.set_data(torch::ones({1}).expand(w.sizes()));
  }
  io::save_model_file(dir.file("repeat.pt"), f);
  expect_load_error(dir.file("repeat.pt"), "repeats its data (stride 0 in dimension");
  io::ModelFile g;
  g.spec = test_util::tiny_mlp_spec(8);
  g.net = models::build_model(g.spec);
  g.meta["quantization"] = {{"scheme", "x"}, {"params", {{{"name", "a"}}, {{"name", "b"}}}}};
  for (int i = 0; i < 2; ++i) {
    g.quant_codes.push_back(torch::empty({0}, torch::kByte));
    g.quant_ranges.push_back(torch::empty({0, 2}));
  }
  io::save_model_file(dir.file("empty.pt"), g);
  const io::ModelFile loaded = io::load_model_file(dir.file("empty.pt"));
  ASSERT_EQ(loaded.quant_codes.size(), 2u);
  EXPECT_EQ(loaded.quant_codes[1].numel(), 0);
}

// NaN or infinite weights, and finite ones beyond the README's limit of ±1e30 (3.4e38 is still a
// float, and overflows every layer it touches to infinity and NaN).
TEST(ModelFile, NanInfiniteOrHugeWeightsAreAnError) {
  test_util::TempDir dir;
  const std::pair<float, const char*> cases[] = {
      {std::numeric_limits<float>::quiet_NaN(), "holds NaN or infinite values"}, {3.4e38f, "holds values beyond ±1e30"}};
  for (const auto& [value, message] : cases) {
    io::ModelFile f;
    f.spec = test_util::tiny_mlp_spec(8);
    f.net = models::build_model(f.spec);
    io::save_model_file(dir.file("ok.pt"), f);
    EXPECT_NO_THROW(io::load_model_file(dir.file("ok.pt")));
    {
      torch::NoGradGuard g;
      f.net->named_parameters()["fc_out.bias"][1] = value;
    }
    io::save_model_file(dir.file("bad.pt"), f);
    expect_load_error(dir.file("bad.pt"), std::string("parameter fc_out.bias ") + message);
  }
}

// A BatchNorm variance below 0, which no training writes, would give NaN at evaluation.
TEST(ModelFile, ANegativeRunningVarianceIsAnError) {
  test_util::TempDir dir;
  io::ModelFile f;
  f.spec = test_util::tiny_mlp_spec(8, "bn");
  f.net = models::build_model(f.spec);
  std::string var_name;
  for (const auto& b : f.net->named_buffers()) {
    if (b.key().size() > 11 && b.key().substr(b.key().size() - 11) == "running_var") var_name = b.key();
  }
  ASSERT_FALSE(var_name.empty());
  io::save_model_file(dir.file("ok.pt"), f);
  EXPECT_NO_THROW(io::load_model_file(dir.file("ok.pt")));
  f.net->named_buffers()[var_name][0] = -0.5f;
  io::save_model_file(dir.file("bad.pt"), f);
  expect_load_error(dir.file("bad.pt"), "buffer " + var_name + " holds a negative variance");
}

// NOTE [Shapes after load]: LibTorch's Module::load takes each tensor's shape from the file.
TEST(ModelFile, WeightsOfAnotherShapeThanTheDescriptionAreAnError) {
  test_util::TempDir dir;
  io::ModelFile f;
  f.spec = test_util::tiny_mlp_spec(8);
  f.net = models::build_model(test_util::tiny_mlp_spec(16));  // weights of one network, description of another
  io::save_model_file(dir.file("wider.pt"), f);
  expect_load_error(dir.file("wider.pt"),
                    "parameter fc1.weight is stored as Float [16, 64] but the model description makes it Float [8, 64]");
  // A hidden layer more in the weights than in the description: every described tensor has its
  // shape, and the extra layer would be skipped.
  models::ModelSpec deeper = f.spec;
  deeper.units = {8, 8};
  f.net = models::build_model(deeper);
  io::save_model_file(dir.file("deeper.pt"), f);
  expect_load_error(dir.file("deeper.pt"), "the weights hold fc2.weight, which the network of the model description");
}

TEST(ModelFile, QuantizedFilesMustAgreeWithTheirDescription) {
  test_util::TempDir dir;
  {
    io::ModelFile f = quantized_file();
    io::save_model_file(dir.file("good.pt"), f);
    io::ModelFile g = io::load_model_file(dir.file("good.pt"));
    EXPECT_EQ(quant::load_from_model_file(g).tensors.size(), f.quant_codes.size());
  }
  {
    io::ModelFile f = quantized_file();
    f.quant_codes[0][0] = 200;  // 4-bit codes: bits 4..7 must be 0
    io::save_model_file(dir.file("code.pt"), f);
    expect_load_error(dir.file("code.pt"), "use bits above the 4 bits", true);
  }
  {
    io::ModelFile f = quantized_file();
    f.quant_ranges[0][0][0] = std::numeric_limits<float>::infinity();
    io::save_model_file(dir.file("inf.pt"), f);
    expect_load_error(dir.file("inf.pt"), "hold NaN or infinite values", true);
  }
  {
    io::ModelFile f = quantized_file();
    f.quant_ranges[0][0][0] = 5.0f;
    f.quant_ranges[0][0][1] = -5.0f;
    io::save_model_file(dir.file("inverted.pt"), f);
    expect_load_error(dir.file("inverted.pt"), "lower bound above the upper bound", true);
  }
  {
    io::ModelFile f = quantized_file();
    f.meta["quantization"]["params"][0]["bits"] = 17;
    io::save_model_file(dir.file("bits.pt"), f);
    expect_load_error(dir.file("bits.pt"), "does not match the scheme u4-asym-tensor-round", true);
  }
  {  // Fields of another type, or missing: one message naming the file, not the JSON library's alone.
    io::ModelFile f = quantized_file();
    f.meta["quantization"]["params"][0]["bits"] = "4";
    io::save_model_file(dir.file("bits_text.pt"), f);
    expect_load_error(dir.file("bits_text.pt"), "(and 'channels' and 'bits' integers)", true);
    io::ModelFile g = quantized_file();
    g.meta["quantization"]["params"][0].erase("channels");
    io::save_model_file(dir.file("no_channels.pt"), g);
    expect_load_error(dir.file("no_channels.pt"), "the quantization description is malformed", true);
  }
  {  // A parameter described twice (its codes stored twice) would leave another one unquantized.
    io::ModelFile f = quantized_file();
    ASSERT_GE(f.quant_codes.size(), 4u);
    f.meta["quantization"]["params"][3] = f.meta["quantization"]["params"][1];
    f.quant_codes[3] = f.quant_codes[1].clone();
    f.quant_ranges[3] = f.quant_ranges[1].clone();
    io::save_model_file(dir.file("twice.pt"), f);
    const std::string name = f.meta["quantization"]["params"][1]["name"].get<std::string>();
    expect_load_error(dir.file("twice.pt"), "quantized parameter " + name + " is described twice", true);
  }
  {
    io::ModelFile f = quantized_file();
    f.quant_codes[0] = f.quant_codes[0].to(torch::kShort);
    io::save_model_file(dir.file("container.pt"), f);
    expect_load_error(dir.file("container.pt"), "expected Byte for 4-bit codes", true);
  }
  {  // Ranges so wide that hi - lo overflows float: dequantization would give 0 * inf = NaN.
    io::ModelFile f = quantized_file();
    f.quant_ranges[0][0][0] = -3e38f;
    f.quant_ranges[0][0][1] = 3e38f;
    io::save_model_file(dir.file("huge.pt"), f);
    expect_load_error(dir.file("huge.pt"), "reach beyond ±1e30 (damaged file)", true);
  }
  {  // Ranges the scheme cannot produce (NOTE [Range rows]): a clipped scheme's range beyond the clip bound,
     // a symmetric scheme's range that is not [-q, q], a global range other than the scheme's.
    struct Case {
      const char* scheme;
      float lo, hi;
      const char* message;
    };
    const Case cases[] = {
        {"u8-asym-tensor-round-clip0.1", 5.0f, 5.0f, "reach beyond the clip bound 0.1"},
        {"u8-asym-tensor-round-clip0.1", -0.2f, 0.05f, "reach beyond the clip bound 0.1"},
        {"u8-sym-tensor-round", -0.5f, 1.0f, "are not symmetric ranges [-q, q] with q > 0"},
        {"u8-sym-channel-round", 0.0f, 0.0f, "are not symmetric ranges [-q, q] with q > 0"},
        {"u8-sym-global1.0-trunc", 1.0f, 1.0f, "are not [-1, 1], the global range"},
        {"u8-sym-global1.0-trunc", -0.5f, 0.5f, "are not [-1, 1], the global range"},
        {"u8-sym-tensor-round-clip0.1", -0.2f, 0.2f, "reach beyond the clip bound 0.1"},
    };
    for (const Case& c : cases) {
      io::ModelFile f;
      f.spec = test_util::tiny_mlp_spec(8);
      f.net = models::build_model(f.spec);
      quant::store_in_model_file(quant::quantize_model(*f.net, quant::QuantScheme::parse(c.scheme)), f);
      const std::string good = dir.file(std::string("good-") + c.scheme + ".pt");
      io::save_model_file(good, f);
      io::ModelFile g = io::load_model_file(good);
      EXPECT_NO_THROW(quant::load_from_model_file(g)) << c.scheme;
      f.quant_ranges[0][0][0] = c.lo;
      f.quant_ranges[0][0][1] = c.hi;
      const std::string bad = dir.file(std::string("bad-") + c.scheme + ".pt");
      io::save_model_file(bad, f);
      SCOPED_TRACE(c.scheme);
      expect_load_error(bad, c.message, true);
    }
  }
  {  // A per-channel tensor stored with one range, its description and ranges made to agree.
    io::ModelFile f;
    f.spec = test_util::tiny_mlp_spec(8);
    f.net = models::build_model(f.spec);
    quant::store_in_model_file(quant::quantize_model(*f.net, quant::QuantScheme::parse("u8-sym-channel-round")), f);
    ASSERT_EQ(f.meta["quantization"]["params"][0]["channels"], 8);
    f.meta["quantization"]["params"][0]["channels"] = 1;
    f.quant_ranges[0] = f.quant_ranges[0].slice(0, 0, 1).clone();
    io::save_model_file(dir.file("channels.pt"), f);
    const std::string name = f.meta["quantization"]["params"][0]["name"].get<std::string>();
    expect_load_error(dir.file("channels.pt"),
                      name + " is stored with 1 range channel(s), but the scheme u8-sym-channel-round gives it 8", true);
  }
  {  // Files quantized before 2026-12-04 gave a vector one range per element under per-channel
     // schemes: they still load, and dequantize as they did.
    io::ModelFile f;
    f.spec = test_util::tiny_mlp_spec(8);
    f.net = models::build_model(f.spec);
    quant::store_in_model_file(quant::quantize_model(*f.net, quant::QuantScheme::parse("u8-sym-channel-round")), f);
    const auto& params = f.meta["quantization"]["params"];
    size_t bias = 0;
    while (bias < params.size() && params[bias]["shape"].size() != 1) ++bias;
    ASSERT_LT(bias, params.size());
    const int64_t n = params[bias]["shape"][0].get<int64_t>();
    io::save_model_file(dir.file("current.pt"), f);
    f.meta["quantization"]["params"][bias]["channels"] = n;
    f.quant_ranges[bias] = f.quant_ranges[bias].expand({n, 2}).contiguous();
    io::save_model_file(dir.file("older.pt"), f);
    io::ModelFile current = io::load_model_file(dir.file("current.pt")), older = io::load_model_file(dir.file("older.pt"));
    const quant::QuantizedModel q_current = quant::load_from_model_file(current), q_older = quant::load_from_model_file(older);
    EXPECT_EQ(q_older.tensors[bias].channels, n);
    q_current.load_clean_weights();
    q_older.load_clean_weights();
    EXPECT_TRUE(at::equal(q_current.params[bias], q_older.params[bias]));
  }
  {  // More code tensors stored than described: none may be silently ignored.
    io::ModelFile f = quantized_file();
    f.quant_codes.push_back(f.quant_codes[0]);
    f.quant_ranges.push_back(f.quant_ranges[0]);
    io::save_model_file(dir.file("extra.pt"), f);
    const size_t n = f.meta["quantization"]["params"].size();
    expect_load_error(dir.file("extra.pt"), "describes " + std::to_string(n) + " quantized parameters but the file stores " +
                                                std::to_string(n + 1) + " code");
  }
}

// Metadata edited by hand: one error naming the file and the field, not a JSON library message.
TEST(ModelFile, MetadataOfTheWrongTypeIsAnErrorNamingTheField) {
  test_util::TempDir dir;
  struct Case {
    std::function<void(nlohmann::json&)> edit;
    std::string message;
  };
  const std::vector<Case> cases = {
      {[](nlohmann::json& m) { m["dataset"] = 5; }, "metadata field 'dataset' must be a string, got 5"},
      {[](nlohmann::json& m) { m["cifar_protocol"] = nullptr; }, "metadata field 'cifar_protocol' must be a string"},
      {[](nlohmann::json& m) { m["cifar_protocol"] = "bogus"; },
       "metadata field 'cifar_protocol' must be holdout, jpeg or official, got \"bogus\""},
      {[](nlohmann::json& m) { m["quantized_by"] = "hand"; },
       "metadata field 'quantized_by' must be training or quantize, got \"hand\""},
      {[](nlohmann::json& m) { m["quantized_by"] = 1; }, "metadata field 'quantized_by' must be a string, got 1"},
      {[](nlohmann::json& m) { m["quantization"] = nullptr; }, "metadata field 'quantization' must be an object"},
      {[](nlohmann::json& m) { m["quantization"]["params"] = nlohmann::json::object(); }, "a 'params' list"},
      {[](nlohmann::json& m) { m["quantization"]["params"][0]["name"] = 3; }, "needs a 'name' string"},
      {[](nlohmann::json& m) { m["quantization"]["include"] = "fc*"; }, "'quantization.include' must be a list"},
      // Values that would be shown as results: an error rate outside [0, 1], impossible counts.
      {[](nlohmann::json& m) { m["test_error"] = "0.09"; }, "metadata field 'test_error' must be a number in [0, 1]"},
      {[](nlohmann::json& m) { m["test_error"] = 9.1; }, "field 'test_error' must be a number in [0, 1], got 9.1"},
      {[](nlohmann::json& m) { m["steps"] = -38; }, "metadata field 'steps' must be an integer"},
      {[](nlohmann::json& m) { m["batch"] = -28; }, "metadata field 'batch' must be an integer"},
      {[](nlohmann::json& m) { m["epochs"] = 0; }, "metadata field 'epochs' must be an integer"},
      {[](nlohmann::json& m) { m["epochs"] = 2.5; }, "metadata field 'epochs' must be an integer"},
      {[](nlohmann::json& m) { m["randbet"] = {{"rate", 2}}; }, "field 'randbet.rate' must be a number in [0, 1]"},
      // Found by a review: these were shown by `info` as they stood.
      {[](nlohmann::json& m) { m["threads"] = -3; }, "metadata field 'threads' must be an integer in [1, "},
      {[](nlohmann::json& m) { m["train_data"] = "bogus"; },
       "metadata field 'train_data' must be a fingerprint 'crc32 ' and 8 hex digits, got \"bogus\""},
      {[](nlohmann::json& m) { m["train_data"] = "crc32 0123456G"; }, "metadata field 'train_data' must be a fingerprint"},
      {[](nlohmann::json& m) { m["cifar_protocol"] = "jpeg"; },
       "metadata field 'cifar_protocol' is \"jpeg\", but the model's data set is mnist, not cifar10"},
      // Values read as sizes or counts (the JSON library reads 4.5 as 4).
      {[](nlohmann::json& m) { m["quantization"]["params"][0]["bits"] = 4.5; }, "(and 'channels' and 'bits' integers)"},
      {[](nlohmann::json& m) { m["quantization"]["weights"] = 5; }, "the metadata counts 5 quantized weights"},
      // Codes without a description would be ignored, and the file run as its float weights.
      {[](nlohmann::json& m) { m.erase("quantization"); }, "stores quantized codes but its metadata has no 'quantization'"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    io::ModelFile f = quantized_file();
    f.meta["dataset"] = "mnist";
    cases[i].edit(f.meta);
    const std::string path = dir.file("m" + std::to_string(i) + ".pt");
    io::save_model_file(path, f);
    expect_load_error(path, cases[i].message, true);
  }
  // What earlier versions wrote still loads: holdout on every data set's model (before commit
  // 42f9282), the fields a training run records, and null threads (a GPU run).
  io::ModelFile older = quantized_file();
  older.meta["dataset"] = "fashion-mnist";
  older.meta["cifar_protocol"] = "holdout";
  older.meta["train_data"] = "crc32 0a1b2c3d";
  older.meta["threads"] = nullptr;
  io::save_model_file(dir.file("older.pt"), older);
  EXPECT_NO_THROW(io::load_model_file(dir.file("older.pt")));
  older.meta["threads"] = 2;
  io::save_model_file(dir.file("older.pt"), older);
  EXPECT_NO_THROW(io::load_model_file(dir.file("older.pt")));
}

TEST(ModelFile, SavingNeverTouchesOtherFilesAndFailsBeforeWriting) {
  test_util::TempDir dir;
  io::ModelFile f;
  f.spec = test_util::tiny_mlp_spec(8);
  f.net = models::build_model(f.spec);
  // A user's own file named like a temporary one survives.
  { std::ofstream(dir.file("m.pt.tmp")) << "mine"; }
  io::save_model_file(dir.file("m.pt"), f);
  std::ifstream mine(dir.file("m.pt.tmp"));
  std::string text;
  mine >> text;
  EXPECT_EQ(text, "mine");
  // A folder in the way, or a missing folder: an error naming the path, and nothing left behind.
  std::filesystem::create_directory(dir.file("taken.pt"));
  EXPECT_THROW(io::save_model_file(dir.file("taken.pt"), f), Error);
  EXPECT_THROW(io::save_model_file(dir.file("no/such/dir/m.pt"), f), Error);
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path())) files += entry.is_regular_file();
  EXPECT_EQ(files, 2);  // m.pt and m.pt.tmp
}

// A run's model file and its --json are written as one: a JSON that cannot be written leaves the
// model file as it was, and no temporary file; a model file that cannot be written leaves no JSON.
TEST(ModelFile, TextsSavedWithTheModelAreWrittenWithItOrNotAtAll) {
  test_util::TempDir dir;
  io::ModelFile f;
  f.spec = test_util::tiny_mlp_spec(8);
  f.net = models::build_model(f.spec);
  const auto regular_files = [&] {
    int files = 0;
    for (const auto& entry : std::filesystem::directory_iterator(dir.path())) files += entry.is_regular_file();
    return files;
  };
  EXPECT_ERROR_CONTAINS(io::save_model_file(dir.file("m.pt"), f, {{dir.file("no/such/dir/m.json"), "{}\n"}}),
                        "no/such/dir/m.json");
  EXPECT_FALSE(std::filesystem::exists(dir.file("m.pt")));
  EXPECT_EQ(regular_files(), 0);

  std::filesystem::create_directory(dir.file("taken.pt"));
  EXPECT_THROW(io::save_model_file(dir.file("taken.pt"), f, {{dir.file("m.json"), "{}\n"}}), Error);
  EXPECT_FALSE(std::filesystem::exists(dir.file("m.json")));
  EXPECT_EQ(regular_files(), 0);

  io::save_model_file(dir.file("m.pt"), f, {{dir.file("m.json"), "{\"a\": 1}\n"}, {"", "skipped"}});
  EXPECT_EQ(regular_files(), 2);
  std::ifstream json(dir.file("m.json"));
  std::string line;
  std::getline(json, line);
  EXPECT_EQ(line, "{\"a\": 1}");
  EXPECT_NO_THROW(io::load_model_file(dir.file("m.pt")));
}

// Saving is a function of the model alone: the same model saved under two names, in two folders,
// gives the same bytes (the archive's folder is "archive", not the temporary file's name).
TEST(ModelFile, TheSameModelSavedTwiceGivesTheSameBytes) {
  test_util::TempDir dir;
  const io::ModelFile f = test_util::quantized_model_file(8);
  std::filesystem::create_directory(dir.file("sub"));
  io::save_model_file(dir.file("a.pt"), f);
  io::save_model_file(dir.file("sub/other_name.pt"), f);
  const auto bytes = [](const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  EXPECT_EQ(bytes(dir.file("a.pt")), bytes(dir.file("sub/other_name.pt")));
  for (const io::ZipRecord& record : io::read_zip_directory(dir.file("a.pt"), "model file")) {
    EXPECT_EQ(record.name.rfind("archive/", 0), 0u) << record.name;
  }
}

// NOTE [Codes of the float weights]: the codes and ranges stored are those quantize() gives the
// float weights stored beside them; edits that keep every other check satisfied are still caught.
TEST(ModelFile, QuantizedCodesMustBeThoseOfTheFloatWeights) {
  test_util::TempDir dir;
  const auto expect_edit_refused = [&](const std::string& name, const std::function<void(io::ModelFile&)>& edit,
                                       const std::string& message) {
    io::ModelFile f = test_util::quantized_model_file(8);  // rquant: u8-asym-tensor-round
    edit(f);
    io::save_model_file(dir.file(name), f);
    expect_load_error(dir.file(name), message, true);
  };
  // Another scheme whose ranges are the same (per-tensor min and max), whose codes are not.
  expect_edit_refused("trunc.pt", [](io::ModelFile& f) { f.meta["quantization"]["scheme"] = "u8-asym-tensor-trunc"; },
                      "the codes and ranges of fc1.weight are not those its float weights give under the scheme "
                      "u8-asym-tensor-trunc");
  // A range narrowed by hand (still ordered, still a per-tensor asymmetric range).
  expect_edit_refused("narrow.pt", [](io::ModelFile& f) { f.quant_ranges[0][0][1] = f.quant_ranges[0][0][1] * 0.5f; },
                      "the codes and ranges of fc1.weight are not those its float weights give");
  // One code changed within its 8 bits, or one float weight changed with its codes kept.
  expect_edit_refused("code.pt", [](io::ModelFile& f) { f.quant_codes[1][0] = (f.quant_codes[1][0].item<int>() + 1) % 256; },
                      "the codes and ranges of fc1.bias are not those");
  expect_edit_refused("weight.pt", [](io::ModelFile& f) {
    torch::NoGradGuard no_grad;
    f.net->named_parameters()["fc1.weight"].view(-1)[0] += 0.5f;
  }, "the codes and ranges of fc1.weight are not those");
  // Patterns that no longer select what is stored.
  expect_edit_refused("include.pt", [](io::ModelFile& f) { f.meta["quantization"]["include"] = {"fc1.*"}; },
                      "are not those its quantization.include/exclude patterns select, [\"fc1.weight\",\"fc1.bias\"]");
  expect_edit_refused("exclude.pt", [](io::ModelFile& f) { f.meta["quantization"]["exclude"] = {"*.bias"}; },
                      "are not those its quantization.include/exclude patterns select");
  // Unedited, the file loads; so do files of before, whose patterns RE2 refuses (lookaround, which
  // std::regex took) or which matched no parameter (accepted before 2026-11-28).
  io::save_model_file(dir.file("good.pt"), test_util::quantized_model_file(8));
  io::ModelFile g = io::load_model_file(dir.file("good.pt"));
  EXPECT_NO_THROW(quant::load_from_model_file(g));
  for (const nlohmann::json& patterns : {nlohmann::json{"re:^(?!zzz)"}, nlohmann::json{"*", "nomatch*"}}) {
    io::ModelFile older = test_util::quantized_model_file(8);
    older.meta["quantization"]["include"] = patterns;
    io::save_model_file(dir.file("older.pt"), older);
    io::ModelFile h = io::load_model_file(dir.file("older.pt"));
    EXPECT_NO_THROW(quant::load_from_model_file(h)) << patterns.dump();
  }
}

#ifdef BITROBUST_WITH_CUDA
// NOTE [Codes of the float weights] on a GPU: codes quantized there must be those the CPU gives the
// same float weights when the file is read (QuantizerCuda.BitIdenticalToCpu), or a model trained on
// a GPU would be refused.
TEST(ModelFileCuda, QuantizedOnTheGpuLoadsOnTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  test_util::TempDir dir;
  for (const char* scheme : {"u8-sym-global1.0-trunc", "u8-asym-tensor-round-clip0.1", "s4-sym-channel-round"}) {
    io::ModelFile f;
    f.spec = test_util::tiny_mlp_spec(32, "regn");
    f.net = models::build_model(f.spec);
    f.net->to(at::kCUDA);
    quant::store_in_model_file(quant::quantize_model(*f.net, quant::QuantScheme::parse(scheme)), f);
    ASSERT_TRUE(f.quant_codes[0].is_cuda());
    f.net->to(at::kCPU);
    io::save_model_file(dir.file("gpu.pt"), f);
    io::ModelFile g = io::load_model_file(dir.file("gpu.pt"));
    EXPECT_NO_THROW(quant::load_from_model_file(g)) << scheme;
  }
}
#endif

// The checks and LibTorch's load read the same bytes, read once: a file replaced after the checks
// (by another process, between two opens) is not what gets loaded.
TEST(ModelFile, AnArchiveLoadsTheBytesThatWereCheckedNotWhatThePathHoldsLater) {
  test_util::TempDir dir;
  const io::ModelFile checked_model = test_util::quantized_model_file(8);
  const std::string path = dir.file("m.pt");
  io::save_model_file(path, checked_model);
  const io::CheckedArchive checked = io::read_archive_checked(path, "model file");
  // Now the path holds a damaged file, which would fail the checks.
  std::filesystem::copy_file(path, dir.file("damaged.pt"));
  {
    io::ZipRecord largest;
    for (const io::ZipRecord& record : checked.records) largest = record.size > largest.size ? record : largest;
    std::fstream f(dir.file("damaged.pt"), std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(largest.data_offset + largest.size / 2));
    const char byte = static_cast<char>(f.get() ^ 0x5A);
    f.seekp(static_cast<std::streamoff>(largest.data_offset + largest.size / 2));
    f.put(byte);
  }
  std::filesystem::rename(dir.file("damaged.pt"), path);
  EXPECT_THROW(io::read_archive_checked(path, "model file"), Error);
  for (const at::Device device : {at::Device(at::kCPU), at::Device(at::kCPU)}) {  // loads again from the same bytes
    torch::serialize::InputArchive archive, weights;
    io::load_checked_archive(archive, checked, device);
    archive.read("model", weights);
    io::ModelFile loaded;
    loaded.net = models::build_model(checked_model.spec);
    io::load_module_checked(*loaded.net, weights, "model file " + path);
    const auto expected = checked_model.net->named_parameters();
    for (const auto& p : loaded.net->named_parameters()) EXPECT_TRUE(torch::equal(p.value(), expected[p.key()])) << p.key();
  }
}

// A full disk while the archive is written: one error naming the file, no temporary file left, and
// no std::terminate (LibTorch throws again from its writer's destructor when a write comes up short).
TEST(ModelFile, AFullDiskIsAnErrorAndLeavesNothingBehind) {
  test_util::TempDir dir;
  const io::ModelFile f = test_util::quantized_model_file(8);
  io::save_model_file(dir.file("whole.pt"), f);
  const auto size = std::filesystem::file_size(dir.file("whole.pt"));
  ASSERT_GT(size, 8192u);
  std::filesystem::remove(dir.file("whole.pt"));
  // A file size limit stands in for the full disk: once SIGXFSZ is ignored, writes past it fail.
  rlimit before{};
  ASSERT_EQ(getrlimit(RLIMIT_FSIZE, &before), 0);
  const auto handler = std::signal(SIGXFSZ, SIG_IGN);
  rlimit limited = before;
  limited.rlim_cur = size / 2;
  ASSERT_EQ(setrlimit(RLIMIT_FSIZE, &limited), 0);
  const std::string message = test_util::error_of([&] { io::save_model_file(dir.file("m.pt"), f); });
  setrlimit(RLIMIT_FSIZE, &before);
  std::signal(SIGXFSZ, handler);
  EXPECT_TRUE(test_util::contains(message, "cannot write model file " + dir.file("m.pt"))) << message;
  EXPECT_TRUE(test_util::contains(message, "failed (disk full?)")) << message;
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}
