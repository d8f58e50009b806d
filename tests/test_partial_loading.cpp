// Partial loading (weft/nn/state_dict.h) and OrderedDict::update: checked against the PyTorch
// recipe written out by hand (a loop over the checkpoint: keep k when the model has k with the
// same shape), and against Python's dict.update semantics.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>

#include "weft/nn.h"
#include "weft/ops.h"
#include "weft/serialize.h"

using namespace weft;
using nn::StateDict;

namespace {

// The pretrained network: a body and a 10-way head; the model keeps the body, has a 2-way head
// and one extra layer.
nn::Sequential pretrained_net() {
  return nn::Sequential({nn::Linear(4, 8), nn::ReLU(), nn::Linear(8, 10)});
}
nn::Sequential model_net() {
  return nn::Sequential({nn::Linear(4, 8), nn::ReLU(), nn::Linear(8, 2), nn::Linear(2, 2)});
}

std::vector<std::string> keys_of(const StateDict& d) { return d.keys(); }

}  // namespace

TEST(OrderedDictUpdate, IsPythonsDictUpdate) {
  OrderedDict<int> d{{"a", 1}, {"b", 2}, {"c", 3}};
  d.update(OrderedDict<int>{{"c", 30}, {"x", 7}, {"a", 10}, {"y", 8}});
  // dict(a=1, b=2, c=3).update(c=30, x=7, a=10, y=8): old keys keep their places.
  EXPECT_EQ(d.keys(), (std::vector<std::string>{"a", "b", "c", "x", "y"}));
  EXPECT_EQ(d.at("a"), 10);
  EXPECT_EQ(d.at("b"), 2);
  EXPECT_EQ(d.at("c"), 30);
  EXPECT_EQ(d.at("y"), 8);
  d.update(d);  // with itself: nothing changes
  EXPECT_EQ(d.keys(), (std::vector<std::string>{"a", "b", "c", "x", "y"}));
  EXPECT_EQ(d.at("x"), 7);
}

TEST(PartialLoading, KeepsMatchingNamesAndShapesInTheModelsOrder) {
  manual_seed(0);
  auto pre = pretrained_net();
  auto model = model_net();
  // A checkpoint as weft::load returns it: in the file's order, not the model's.
  const std::string path =
      (std::filesystem::temp_directory_path() / "weft_partial_loading.safetensors").string();
  StateDict file_order;
  auto pre_sd = pre->state_dict();
  for (auto it = pre_sd.end(); it != pre_sd.begin();) {
    --it;
    file_order.insert(it->first, it->second);
  }
  save(file_order, path);
  const StateDict loaded = load(path);
  std::filesystem::remove(path);

  const StateDict model_sd = model->state_dict();
  const nn::MatchResult r = nn::filter_matching(loaded, model_sd);

  // The recipe, by hand, in the model's order.
  StateDict want;
  for (const auto& [k, v] : model_sd) {
    const Tensor* p = loaded.find(k);
    if (p && p->sizes() == v.sizes()) want.insert(k, *p);
  }
  EXPECT_EQ(keys_of(r.kept), keys_of(want));
  EXPECT_EQ(keys_of(r.kept), (std::vector<std::string>{"0.weight", "0.bias"}));
  for (const auto& [k, v] : r.kept) EXPECT_TRUE(allclose(v, want.at(k), 0, 0)) << k;

  // What was left out, in the checkpoint's order, with the reasons.
  std::vector<std::string> why, want_why;
  for (const auto& l : r.left_out) why.push_back(l.describe());
  for (const auto& [k, v] : loaded) {
    if (k == "2.weight")
      want_why.push_back("2.weight: shape (10, 8) in the checkpoint, (2, 8) in the model");
    if (k == "2.bias")
      want_why.push_back("2.bias: shape (10,) in the checkpoint, (2,) in the model");
  }
  EXPECT_EQ(why, want_why);
  ASSERT_EQ(r.left_out.size(), 2u);
  EXPECT_EQ(r.left_out[0].reason, nn::LeftOut::Reason::ShapeMismatch);
  EXPECT_EQ(r.not_provided, (std::vector<std::string>{"3.weight", "3.bias"}));

  StateDict extra = loaded;
  extra.insert("head.weight", zeros({3}));
  const auto r2 = nn::filter_matching(extra, model_sd);
  ASSERT_EQ(r2.left_out.size(), 3u);
  EXPECT_EQ(r2.left_out.back().describe(), "head.weight: not in the model");
  EXPECT_EQ(r2.left_out.back().reason, nn::LeftOut::Reason::NotInModel);
}

TEST(PartialLoading, LoadMatchingEqualsTheRecipe) {
  manual_seed(1);
  auto pre = pretrained_net();
  auto a = model_net();
  auto b = model_net();
  b->load_state_dict(a->state_dict());  // two identical models
  const StateDict before = a->state_dict();

  // PyTorch's recipe on a: model_dict.update(filtered); model.load_state_dict(model_dict).
  StateDict model_dict = a->state_dict();
  model_dict.update(nn::filter_matching(pre->state_dict(), model_dict).kept);
  a->load_state_dict(model_dict);
  // The one-call form on b.
  const auto r = nn::load_matching(*b, pre->state_dict());
  EXPECT_EQ(r.kept.size(), 2u);

  const auto pre_sd = pre->state_dict();
  for (const auto& [k, v] : b->state_dict()) {
    EXPECT_TRUE(allclose(v, a->state_dict().at(k), 0, 0)) << k;
    const bool from_checkpoint = k == "0.weight" || k == "0.bias";
    EXPECT_TRUE(allclose(v, from_checkpoint ? pre_sd.at(k) : before.at(k), 0, 0)) << k;
  }
}
