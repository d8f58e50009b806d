// libtorch idioms that weft accepts with libtorch's meaning (register_module of a holder, empty
// holders assigned later, SGD(params, lr), printing sizes()), the README's user module
// (examples/custom_module.cpp) in one process, under DataParallel and under DDP, and
// DataParallel replicas printing whole lines.
#include <gtest/gtest.h>

#include <barrier>
#include <fstream>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>

#include "error_message.h"
#include "subprocess.h"
#include "weft/nn.h"
#include "weft/nn/parallel/data_parallel.h"
#include "weft/ops.h"
#include "weft/optim.h"

using namespace weft;
using weft::test::build_dir;
using weft::test::run_command;

namespace {

// A libtorch-style module: holders declared empty, assigned in reset() from register_module.
struct NetImpl : nn::Cloneable<NetImpl> {
  NetImpl() : Cloneable("Net") { reset(); }
  void reset() override {
    fc = register_module("fc", nn::Linear(5, 2));
    act = register_module("act", nn::ReLU());
  }
  Tensor forward(const Tensor& x) override { return act(fc(x)); }
  nn::Linear fc{nullptr};
  nn::ReLU act = nullptr;
};
using Net = nn::ModuleHolder<NetImpl>;

std::vector<float> values(const std::shared_ptr<nn::Module>& m) {
  std::vector<float> v;
  for (const Tensor& p : m->parameters())
    for (float f : p.contiguous().to_vector_float()) v.push_back(f);
  return v;
}

}  // namespace

TEST(LibtorchIdioms, RegisterModuleTakesAHolderAndReturnsTheModule) {
  Net net;
  auto registered = net->named_children();
  ASSERT_EQ(registered.keys(), (std::vector<std::string>{"fc", "act"}));
  EXPECT_EQ(registered.at("fc").get(), net->fc.get());  // the member is the registered module
  EXPECT_EQ(net->fc->in_features, 5);
  EXPECT_EQ(net->named_parameters()[0].first, "fc.weight");
  Tensor x = randn({3, 5});
  EXPECT_TRUE(allclose(net(x), net->fc(x).relu(), 0, 0));
  // A replica (clone) rebuilds its own members through reset(): none is shared.
  auto copy = std::dynamic_pointer_cast<NetImpl>(net->clone());
  ASSERT_TRUE(copy);
  EXPECT_NE(copy->fc.get(), net->fc.get());
  EXPECT_EQ(values(copy), values(net.ptr()));
}

TEST(LibtorchIdioms, EmptyHolders) {
  nn::Linear fc{nullptr};
  EXPECT_TRUE(fc.is_empty());
  EXPECT_FALSE(fc);
  const std::string m = test::error_message([&] { fc(randn({1, 2})); });
  EXPECT_NE(m.find("accessing an empty module holder"), std::string::npos) << m;
  EXPECT_THROW((void)fc->in_features, Error);
  fc = nn::Linear(2, 3);
  EXPECT_FALSE(fc.is_empty());
  EXPECT_EQ(fc(randn({4, 2})).sizes(), (Shape{4, 3}));
  // Copying a holder shares its module (the variadic constructor does not take it over).
  nn::Linear same(fc);
  EXPECT_EQ(same.get(), fc.get());
  nn::Conv2d conv = nullptr;
  EXPECT_TRUE(conv.is_empty());
  nn::BatchNorm2d bn{nullptr};
  EXPECT_TRUE(bn.is_empty());
}

TEST(LibtorchIdioms, OptimizersTakeTheLearningRate) {
  for (int which = 0; which < 3; ++which) {
    manual_seed(3);
    nn::Linear a(4, 3);
    auto b = std::dynamic_pointer_cast<nn::LinearImpl>(a->clone());
    std::unique_ptr<optim::Optimizer> short_form, long_form;
    if (which == 0) {
      short_form = std::make_unique<optim::SGD>(a->parameters(), 0.01);
      long_form = std::make_unique<optim::SGD>(b->parameters(), optim::SGDOptions{.lr = 0.01});
    } else if (which == 1) {
      short_form = std::make_unique<optim::Adam>(a->parameters(), 0.01);
      long_form = std::make_unique<optim::Adam>(b->parameters(), optim::AdamOptions{.lr = 0.01});
    } else {
      short_form = std::make_unique<optim::AdamW>(a->parameters(), 0.01);
      long_form = std::make_unique<optim::AdamW>(
          b->parameters(), optim::AdamOptions{.lr = 0.01, .weight_decay = 1e-2});
    }
    EXPECT_EQ(short_form->param_groups()[0].options.lr, 0.01);
    Tensor x = randn({5, 4});
    for (int step = 0; step < 3; ++step) {
      short_form->zero_grad();
      long_form->zero_grad();
      a(x).pow(2).sum().backward();
      b->forward(x).pow(2).sum().backward();
      short_form->step();
      long_form->step();
    }
    EXPECT_EQ(values(a.ptr()), values(b)) << "optimizer " << which;
  }
  // A braced list still means the options: Adam(params, {}) has the default learning rate.
  nn::Linear c(2, 2);
  optim::Adam defaults(c->parameters(), {});
  EXPECT_EQ(defaults.param_groups()[0].options.lr, 1e-3);
}

TEST(LibtorchIdioms, SizesPrintAsLibtorch) {
  std::ostringstream os;
  Tensor x = randn({32, 4});
  os << x.sizes() << " " << randn({7}).sizes() << " " << zeros({}).sizes();
  EXPECT_EQ(os.str(), "[32, 4] [7] []");
  testing::internal::CaptureStdout();
  std::cout << x.sizes() << std::endl;
  EXPECT_EQ(testing::internal::GetCapturedStdout(), "[32, 4]\n");
  EXPECT_EQ(x.sizes().vec(), (std::vector<int64_t>{32, 4}));
}

// A module whose forward prints one line in two pieces, with every replica between the pieces
// at once (a barrier): without whole-line output the pieces would interleave.
struct PrinterImpl : nn::Cloneable<PrinterImpl> {
  explicit PrinterImpl(std::shared_ptr<std::barrier<>> sync)
      : Cloneable("Printer"), sync(std::move(sync)) {
    reset();
  }
  void reset() override {}
  Tensor forward(const Tensor& x) override {
    std::cout << "replica with " << x.size(0) << " rows";
    std::cerr << "err part one";
    sync->arrive_and_wait();
    std::cout << " says " << x.to_vector_float()[0] << "\n" << x << "\n";
    std::cerr << " and two" << std::endl;
    return x * 2;
  }
  std::shared_ptr<std::barrier<>> sync;
};

TEST(DataParallel, ReplicasPrintWholeLines) {
  for (int k : {2, 3}) {
    auto printer = std::make_shared<PrinterImpl>(std::make_shared<std::barrier<>>(k));
    std::vector<Device> devices;
    for (int i = 0; i < k; ++i) devices.push_back(Device::CPU(i));
    nn::DataParallel run(printer, {.device_ids = devices});  // a row per replica
    Tensor x = arange(0, k, 1);
    testing::internal::CaptureStdout();
    testing::internal::CaptureStderr();
    Tensor y = run(x.view({k, 1}));
    const std::string out = testing::internal::GetCapturedStdout();
    const std::string err = testing::internal::GetCapturedStderr();
    EXPECT_TRUE(allclose(y, x.view({k, 1}) * 2, 0, 0));
    std::istringstream lines(out);
    std::string line;
    int says = 0, tensors = 0;
    while (std::getline(lines, line)) {
      if (line.rfind("replica with 1 rows says ", 0) == 0) {
        ++says;
      } else if (line.rfind("tensor([[", 0) == 0 && line.back() == ')') {
        ++tensors;
      } else {
        ADD_FAILURE() << "a line mixed from several replicas: '" << line << "'\n" << out;
      }
    }
    EXPECT_EQ(says, k) << out;
    EXPECT_EQ(tensors, k) << out;
    std::istringstream err_lines(err);
    int errs = 0;
    while (std::getline(err_lines, line)) {
      EXPECT_EQ(line, "err part one and two") << err;
      ++errs;
    }
    EXPECT_EQ(errs, k) << err;
  }
}

namespace {

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t"), b = s.find_last_not_of(" \t");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

// The values after "PARAMS" on the first such line.
std::vector<double> params_of(const std::string& output) {
  std::vector<double> v;
  const size_t at = output.find("PARAMS ");
  if (at == std::string::npos) return v;
  std::istringstream is(output.substr(at + 7, output.find('\n', at) - at - 7));
  for (double d; is >> d;) v.push_back(d);
  return v;
}

}  // namespace

TEST(UserModule, ReadmeSnippetIsTheExample) {
  const std::string readme = read_text(std::string(WEFT_SOURCE_DIR) + "/README.md");
  const size_t section = readme.find("## Writing your own module");
  ASSERT_NE(section, std::string::npos);
  const size_t begin = readme.find("```cpp\n", section) + 7;
  const size_t end = readme.find("```", begin);
  std::set<std::string> example_lines;
  std::istringstream ex(read_text(std::string(WEFT_SOURCE_DIR) + "/examples/custom_module.cpp"));
  for (std::string l; std::getline(ex, l);) example_lines.insert(trim(l));
  std::istringstream snippet(readme.substr(begin, end - begin));
  int checked = 0;
  for (std::string l; std::getline(snippet, l);) {
    if (trim(l).empty()) continue;
    EXPECT_TRUE(example_lines.count(trim(l))) << "README line not in the example: " << l;
    ++checked;
  }
  EXPECT_GT(checked, 20);
}

TEST(UserModule, SameTrainingAloneUnderDataParallelAndDDP) {
  const std::string exe = build_dir() + "/examples/custom_module";
  const auto single = run_command(exe + " single", 120);
  const auto dp = run_command(exe + " dp", 120);
  const auto ddp = run_command(
      build_dir() + "/tools/weft-run --nproc-per-node 2 --standalone " + exe + " ddp", 300);
  ASSERT_EQ(single.code, 0) << single.output;
  ASSERT_EQ(dp.code, 0) << dp.output;
  ASSERT_EQ(ddp.code, 0) << ddp.output;
  EXPECT_NE(single.output.find("single: input [32, 4], target [32, 2]"), std::string::npos)
      << single.output;
  EXPECT_NE(ddp.output.find("ddp: input [16, 4], target [16, 2]"), std::string::npos) << ddp.output;
  const auto want = params_of(single.output);
  ASSERT_EQ(want.size(), 4u * 16 + 16 + 16 * 2 + 2 + 2) << single.output;
  for (const auto* run : {&dp, &ddp}) {
    const auto got = params_of(run->output);
    ASSERT_EQ(got.size(), want.size()) << run->output;
    for (size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(got[i], want[i], 1e-5 * (1 + std::abs(want[i]))) << i << "\n" << run->output;
  }
}
