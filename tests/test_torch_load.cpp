// Loading torch.save files: goldens written by PyTorch (scripts/make_pt_goldens.py) loaded through
// torch_load and weft::load, compared exactly with the values PyTorch wrote beside them
// (expected.safetensors, read by weft's independent safetensors loader); the forbidden global,
// map_location, and files of other kinds named for what they are.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "error_message.h"
#include "weft/cuda.h"
#include "weft/nn.h"
#include "weft/ops.h"
#include "weft/serialize.h"

using namespace weft;
namespace fs = std::filesystem;

namespace {

std::string golden(const std::string& name) {
  return std::string(WEFT_GOLDEN_DIR) + "/torch/" + name;
}

const TensorDict& expected() {
  static const TensorDict e = load(golden("expected.safetensors"));
  return e;
}

// Same dtype, shape and values, exactly.
void expect_equal(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_TRUE(got.defined()) << what;
  EXPECT_EQ(got.dtype(), want.dtype()) << what;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  if (want.dtype() == kInt64)
    EXPECT_EQ(got.to_vector_int64(), want.to_vector_int64()) << what;
  else
    EXPECT_EQ(got.to(kFloat32).to_vector_float(), want.to(kFloat32).to_vector_float()) << what;
}

nn::Sequential cnn() {
  return nn::Sequential({nn::Conv2d(2, 3, 3, {.padding = {1, 1}}), nn::BatchNorm2d(3), nn::ReLU(),
                         nn::MaxPool2d(2), nn::Flatten(), nn::Linear(12, 4)});
}

const char* const kCnnKeys[] = {"0.weight",
                                "0.bias",
                                "1.weight",
                                "1.bias",
                                "1.running_mean",
                                "1.running_var",
                                "1.num_batches_tracked",
                                "5.weight",
                                "5.bias"};

fs::path temp_file(const std::string& name, const std::string& bytes) {
  fs::path d = fs::temp_directory_path() / ("weft_torch_load_" + std::to_string(::getpid()));
  fs::create_directories(d);
  std::ofstream(d / name, std::ios::binary).write(bytes.data(), (std::streamsize)bytes.size());
  return d / name;
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), {});
}

}  // namespace

TEST(TorchLoad, CnnStateDictMatchesPyTorch) {
  TorchValue v = torch_load(golden("cnn.pt"));
  ASSERT_TRUE(v.is_tensor_dict());
  EXPECT_TRUE(v.ordered);  // state_dict() is an OrderedDict
  ASSERT_EQ(v.entries.size(), std::size(kCnnKeys));
  for (size_t i = 0; i < std::size(kCnnKeys); ++i) {
    EXPECT_EQ(v.entries[i].first.str, kCnnKeys[i]);  // PyTorch's order
    expect_equal(v.entries[i].second.tensor, expected().at(std::string("cnn.") + kCnnKeys[i]),
                 kCnnKeys[i]);
  }
  EXPECT_EQ(v.find("1.num_batches_tracked")->tensor.item<int64_t>(), 1);
  EXPECT_EQ(v.find("1.num_batches_tracked")->file_dtype, "int64");

  // The module load path: weft::load reads the .pt file, the model computes what PyTorch's did.
  nn::Sequential net = cnn();
  net->load_state_dict(load(golden("cnn.pt")));
  net->eval();
  Tensor out = net(expected().at("cnn.input"));
  EXPECT_TRUE(allclose(out, expected().at("cnn.output"), 1e-4, 1e-6));
}

TEST(TorchLoad, DataParallelStateDict) {
  TensorDict dp = load(golden("cnn_dataparallel.pt"));
  ASSERT_EQ(dp.size(), std::size(kCnnKeys));
  for (size_t i = 0; i < std::size(kCnnKeys); ++i)
    EXPECT_EQ(dp.keys()[i], std::string("module.") + kCnnKeys[i]);
  nn::Sequential net = cnn();
  net->load_state_dict(nn::strip_module_prefix(dp));
  for (const char* k : kCnnKeys)
    expect_equal(net->state_dict().at(k), expected().at(std::string("cnn.") + k), k);
}

TEST(TorchLoad, CheckpointDict) {
  TorchValue ck = torch_load(golden("checkpoint.pt"));
  ASSERT_TRUE(ck.is(TorchValue::Kind::Dict));
  EXPECT_FALSE(ck.ordered);
  EXPECT_EQ(ck.find("epoch")->integer, 3);
  EXPECT_EQ(ck.find("best_acc")->real, 0.75);
  EXPECT_EQ(ck.find("arch")->str, "cnn");
  const TorchValue& nested = *ck.find("nested");  // [1, (2.5, None, True), {'k': 'v'}]
  ASSERT_TRUE(nested.is(TorchValue::Kind::List));
  ASSERT_EQ(nested.items.size(), 3u);
  EXPECT_EQ(nested.items[0].integer, 1);
  ASSERT_TRUE(nested.items[1].is(TorchValue::Kind::Tuple));
  EXPECT_EQ(nested.items[1].items[0].real, 2.5);
  EXPECT_TRUE(nested.items[1].items[1].is(TorchValue::Kind::None));
  EXPECT_TRUE(nested.items[1].items[2].boolean);
  EXPECT_EQ(nested.items[2].find("k")->str, "v");

  // The model's state_dict under 'model'; the optimizer's state keyed by parameter index.
  TensorDict sd = torch_state_dict(ck);
  for (const char* k : kCnnKeys) expect_equal(sd.at(k), expected().at(std::string("cnn.") + k), k);
  const TorchValue& opt = *ck.find("optimizer");
  const TorchValue& state = *opt.find("state");
  ASSERT_EQ(state.entries.size(), 6u);
  for (const auto& [index, st] : state.entries) {
    ASSERT_TRUE(index.is(TorchValue::Kind::Int));
    const std::string name = "optim." + std::to_string(index.integer) + ".momentum_buffer";
    expect_equal(st.find("momentum_buffer")->tensor, expected().at(name), name);
  }
  const TorchValue& group = opt.find("param_groups")->items.at(0);
  EXPECT_EQ(group.find("lr")->real, 0.1);
  EXPECT_EQ(group.find("momentum")->real, 0.9);
  EXPECT_FALSE(group.find("nesterov")->boolean);
  ASSERT_EQ(group.find("params")->items.size(), 6u);
  for (int64_t i = 0; i < 6; ++i) EXPECT_EQ(group.find("params")->items[i].integer, i);

  // weft::load: the state_dict, and the scalar entries beside it as metadata.
  std::map<std::string, std::string> meta;
  TensorDict loaded = load(golden("checkpoint.pt"), Device::CPU(), &meta);
  EXPECT_EQ(loaded.size(), std::size(kCnnKeys));
  EXPECT_EQ(meta, (std::map<std::string, std::string>{
                      {"epoch", "3"}, {"best_acc", "0.75"}, {"arch", "cnn"}}));
}

TEST(TorchLoad, EveryDtypeViewsAndSharedStorage) {
  const char* const names[] = {"float32", "float64", "float16", "bfloat16", "int64",
                               "int32",   "int16",   "int8",    "uint8",    "bool"};
  for (const char* file : {"dtypes.pt", "dtypes_legacy.pt", "dtypes_proto4.pt"}) {
    SCOPED_TRACE(file);
    TorchValue v = torch_load(golden(file));
    ASSERT_TRUE(v.is_tensor_dict());
    for (const auto& [k, t] : v.entries)
      expect_equal(t.tensor, expected().at("dtypes." + k.str), k.str);
    for (const char* n : names) EXPECT_EQ(v.find(n)->file_dtype, n);
    // Non-contiguous views keep PyTorch's strides and offset.
    const Tensor tr = v.find("transposed")->tensor, st = v.find("strided")->tensor;
    EXPECT_EQ(tr.strides(), (Shape{1, 4}));
    EXPECT_EQ(st.strides(), (Shape{4, 2}));
    EXPECT_EQ(st.storage_offset(), 4);
    EXPECT_EQ(tr.impl()->storage, st.impl()->storage);
    // Tensors that shared a storage share memory: a write through one shows in the other.
    Tensor base = v.find("shared_base")->tensor, view = v.find("shared_view")->tensor;
    ASSERT_EQ(base.impl()->storage, view.impl()->storage);
    EXPECT_EQ(view.storage_offset(), 3);
    base.data_ptr<int64_t>()[4] = 1000;
    EXPECT_EQ(view.to_vector_int64()[1], 1000);
    EXPECT_EQ(v.find("scalar")->tensor.dim(), 0);
    EXPECT_EQ(v.find("empty")->tensor.sizes(), (Shape{0, 3}));
  }
}

TEST(TorchLoad, Parameter) {
  // torch.save of an nn.Parameter goes through torch._utils._rebuild_parameter.
  const Tensor p = torch_load(golden("parameter.pt")).find("p")->tensor;
  EXPECT_TRUE(p.requires_grad());
  EXPECT_TRUE(p.is_leaf());
  expect_equal(p.detach(), expected().at("parameter.p"), "p");
}

TEST(TorchLoad, RefusesForbiddenGlobal) {
  const std::string m = test::error_message([] { torch_load(golden("forbidden_global.pt")); });
  EXPECT_NE(m.find("refusing global 'posix.system'"), std::string::npos) << m;
  EXPECT_NE(m.find("forbidden_global.pt"), std::string::npos) << m;
  EXPECT_NE(test::error_message([] {
              load(golden("forbidden_global.pt"));
            }).find("refusing global 'posix.system'"),
            std::string::npos);
}

TEST(TorchLoad, MapLocation) {
  // Saved on 'cuda:0': without map_location that needs CUDA, as in torch.load.
  if (!cuda::is_available()) {
    const std::string m = test::error_message([] { torch_load(golden("cuda_location.pt")); });
    EXPECT_NE(m.find("saved on 'cuda:0' but CUDA is not available"), std::string::npos) << m;
    EXPECT_NE(m.find("map_location"), std::string::npos) << m;
  } else {
    EXPECT_TRUE(torch_load(golden("cuda_location.pt")).find("w")->tensor.device().is_cuda());
  }
  TorchValue v = torch_load(golden("cuda_location.pt"), Device::CPU(1));
  EXPECT_EQ(v.find("w")->tensor.device(), Device::CPU(1));
  EXPECT_EQ(v.find("w")->tensor.to_vector_float(), (std::vector<float>{0, 1, 2, 3}));
  // Views keep sharing their storage on the target device; weft::load maps to its device.
  TorchValue d = torch_load(golden("dtypes.pt"), Device::CPU(1));
  EXPECT_EQ(d.find("shared_view")->tensor.device(), Device::CPU(1));
  EXPECT_EQ(d.find("shared_view")->tensor.impl()->storage,
            d.find("shared_base")->tensor.impl()->storage);
  EXPECT_EQ(load(golden("cnn.pt"), Device::CPU(1)).at("0.weight").device(), Device::CPU(1));
}

TEST(TorchLoad, StateDictHelperNamesWhatIsThere) {
  TorchValue ck = torch_load(golden("checkpoint.pt"));
  EXPECT_EQ(torch_state_dict(ck, "model").size(), std::size(kCnnKeys));
  std::string m = test::error_message([&] { torch_state_dict(ck, "weights"); });
  EXPECT_NE(m.find("no key 'weights'"), std::string::npos) << m;
  EXPECT_NE(m.find("keys 'model' (a dict), 'optimizer' (a dict), 'epoch' (an int)"),
            std::string::npos)
      << m;
  m = test::error_message([&] { torch_state_dict(ck, "optimizer"); });
  EXPECT_NE(m.find("'optimizer' is not a state_dict"), std::string::npos) << m;
  m = test::error_message([&] { torch_state_dict(*ck.find("nested")); });
  EXPECT_NE(m.find("holds no state_dict"), std::string::npos) << m;
  EXPECT_NE(m.find("it is a list"), std::string::npos) << m;
}

TEST(TorchLoad, OtherFilesAreNamedForWhatTheyAre) {
  const struct {
    const char* name;
    std::string bytes;
    const char* says;
  } cases[] = {
      {"a.gz", std::string("\x1f\x8b\x08\x00\x00\x00\x00\x00", 8) + "rest", "a gzip file"},
      {"b.pkl", std::string("\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.", 14),
       "a Python pickle file"},
      {"c.npy", std::string("\x93NUMPY\x01\x00", 8) + "{}", "a numpy .npy file"},
      {"d.h5", std::string("\x89HDF\r\n\x1a\n", 8), "an HDF5 file"},
      {"e.zip", std::string("PK\x05\x06", 4) + std::string(18, '\0'),
       "a zip archive without a <dir>/data.pkl record"},
      {"f.txt", "<!DOCTYPE html><html>", "unknown format, starting with the bytes 3c 21 44 4f"},
  };
  for (const auto& c : cases) {
    const std::string path = temp_file(c.name, c.bytes).string();
    std::string m = test::error_message([&] { load(path); });
    EXPECT_NE(m.find(c.says), std::string::npos) << c.name << ": " << m;
    EXPECT_NE(m.find(path), std::string::npos) << m;
    m = test::error_message([&] { torch_load(path); });
    if (std::string(c.name) != "f.txt") {
      EXPECT_NE(m.find(c.says), std::string::npos) << c.name << ": " << m;
    }
    EXPECT_NE(m.find("not a torch.save checkpoint"), std::string::npos) << m;
  }
  // A safetensors file whose header size (640 = 0x280) starts like a pickle's "\x80\x02" is
  // still a safetensors file.
  std::string meta(600, 'x');
  const fs::path st = fs::temp_directory_path() /
                      ("weft_torch_load_" + std::to_string(::getpid())) / "p.safetensors";
  for (size_t n = 0; n < 200; ++n) {  // the header also holds the tensor's checksum entry
    save({{"w", full({2}, 1.5)}}, st.string(), {{"m", meta.substr(0, 400 + n)}});
    if (file_bytes(st.string()).substr(0, 2) == "\x80\x02") break;
  }
  ASSERT_EQ(file_bytes(st.string()).substr(0, 2), "\x80\x02");
  EXPECT_EQ(load(st.string()).at("w").to_vector_float(), (std::vector<float>{1.5f, 1.5f}));
  // A safetensors file is not a torch.save checkpoint either; weft::load still reads it.
  const std::string m = test::error_message([] { torch_load(golden("expected.safetensors")); });
  EXPECT_NE(m.find("this is a safetensors file"), std::string::npos) << m;
  fs::remove_all(fs::temp_directory_path() / ("weft_torch_load_" + std::to_string(::getpid())));
}

TEST(TorchLoad, CorruptFilesThrow) {
  for (const char* file : {"cnn.pt", "dtypes_legacy.pt"}) {
    const std::string bytes = file_bytes(golden(file));
    ASSERT_GT(bytes.size(), 100u);
    for (size_t cut : {size_t(20), bytes.size() / 3, bytes.size() / 2, bytes.size() - 10}) {
      std::vector<uint8_t> b(bytes.begin(), bytes.begin() + (ptrdiff_t)cut);
      EXPECT_THROW(torch_load_from_bytes(b), Error) << file << " cut at " << cut;
    }
    // One flipped byte anywhere: an error (zip CRCs, pickle checks) or a load, never a crash.
    for (size_t i = 0; i < bytes.size(); i += 7) {
      std::vector<uint8_t> b(bytes.begin(), bytes.end());
      b[i] ^= 0x5a;
      try {
        torch_load_from_bytes(b);
      } catch (const Error&) {
      }
    }
  }
}
