// The restricted unpickler on hand-written pickles (Note [Restricted unpickler]): Python's
// semantics where torch.save relies on them (memo sharing, dict keys, ints), the allow-list, the
// tensor bounds check and the hard limits. The byte strings follow Python's pickle opcodes.
#include <gtest/gtest.h>

#include <string>

#include "error_message.h"
#include "serialize/pickle/unpickler.h"
#include "serialize/torch_load/to_value.h"

using namespace weft;
using namespace std::string_literals;
namespace pk = weft::serialize::pickle;

namespace {

pk::Unpickled unpickle(const std::string& s, const pk::Limits& limits = {}) {
  return pk::unpickle(reinterpret_cast<const uint8_t*>(s.data()), s.size(), limits);
}

std::string error_of(const std::string& s, const pk::Limits& limits = {}) {
  return test::error_message([&] { unpickle(s, limits); });
}

std::string u(const std::string& s) {  // BINUNICODE
  const uint32_t n = (uint32_t)s.size();
  return std::string("X") + char(n & 255) + char((n >> 8) & 255) + char(n >> 16) + char(n >> 24) +
         s;
}

std::string k(int v) { return std::string("K") + char(v); }  // BININT1

// torch.save's pickle of one tensor: _rebuild_tensor_v2(storage, offset, size, stride, False,
// OrderedDict()) over FloatStorage key '0' of `numel` elements.
std::string tensor_pickle(int numel, int offset, const std::string& size,
                          const std::string& stride) {
  return std::string("\x80\x02") + "ctorch._utils\n_rebuild_tensor_v2\n(" + "(" + u("storage") +
         "ctorch\nFloatStorage\n" + u("0") + u("cpu") + k(numel) + "tQ" + k(offset) + size +
         stride + "\x89" + "ccollections\nOrderedDict\n)R" + "tR.";
}

}  // namespace

TEST(Unpickler, ScalarsAndContainers) {
  // (None, True, -1 (LONG1), 2**40 (LONG1), -5 (BININT), 1.5 (BINFLOAT), 'é', b'ab', [1, 2])
  const std::string p =
      std::string("\x80\x02(N\x88\x8a\x01\xff\x8a\x06\x00\x00\x00\x00\x00\x01", 16) +
      std::string("J\xfb\xff\xff\xff", 5) + "G?\xf8" + std::string(6, '\0') + u("\xc3\xa9") +
      "C\x02" + "ab" + "](" + k(1) + k(2) + "et.";
  const pk::Unpickled r = unpickle(p);
  EXPECT_EQ(r.end, p.size());
  ASSERT_EQ(r.root->kind, pk::Kind::Tuple);
  const auto& it = r.root->items;
  ASSERT_EQ(it.size(), 9u);
  EXPECT_EQ(it[0]->kind, pk::Kind::None);
  EXPECT_TRUE(it[1]->boolean);
  EXPECT_EQ(it[2]->integer, -1);
  EXPECT_EQ(it[3]->integer, int64_t{1} << 40);
  EXPECT_EQ(it[4]->integer, -5);
  EXPECT_EQ(it[5]->real, 1.5);
  EXPECT_EQ(it[6]->str, "\xc3\xa9");
  EXPECT_EQ(it[7]->kind, pk::Kind::Bytes);
  ASSERT_EQ(it[8]->items.size(), 2u);
  EXPECT_EQ(it[8]->items[1]->integer, 2);
}

TEST(Unpickler, DictKeysAndMemoAsPython) {
  // d = {}; d['a'] = 1; d[1] = 2; d[True] = 3 (replaces d[1]); d['a'] = 4; then (d, d) via memo.
  const std::string p = std::string("\x80\x02}q\x00("s) + u("a") + k(1) + k(1) + k(2) + "\x88" +
                        k(3) + u("a") + k(4) + "uh\x00\x86."s;
  const pk::Unpickled r = unpickle(p);
  const pk::Object* d = r.root->items[0];
  EXPECT_EQ(d, r.root->items[1]);  // one object, reached twice
  ASSERT_EQ(d->items.size(), 4u);  // two keys, insertion order kept
  EXPECT_EQ(d->items[0]->str, "a");
  EXPECT_EQ(d->items[1]->integer, 4);
  EXPECT_EQ(d->items[2]->integer, 1);
  EXPECT_EQ(d->items[3]->integer, 3);
  EXPECT_NE(error_of("\x80\x02}](" + k(1) + "s."), "no error");  // a list as a key
  EXPECT_NE(error_of("\x80\x02}]" + k(1) + "s.").find("a list cannot be a dict key"),
            std::string::npos);
}

TEST(Unpickler, RefusesGlobalsOutsideTheAllowList) {
  for (const auto& [pickle, name] : std::vector<std::pair<std::string, std::string>>{
           {"\x80\x02"
            "cos\nsystem\n" +
                u("echo hi") + "\x85R.",
            "os.system"},
           {"\x80\x02"
            "cbuiltins\neval\n.",
            "builtins.eval"},
           {"\x80\x04" + u("subprocess") + u("Popen") + "\x93.", "subprocess.Popen"},
           {"\x80\x02"
            "ctorch.nn.modules.linear\nLinear\n)\x81.",
            "torch.nn.modules.linear.Linear"},
           {"\x80\x02"
            "cnumpy.core.multiarray\nscalar\n.",
            "numpy.core.multiarray.scalar"}}) {
    const std::string m = error_of(pickle);
    EXPECT_NE(m.find("refusing global '" + name + "'"), std::string::npos) << m;
  }
  EXPECT_NE(error_of("\x80\x02"
                     "ctorch\nComplexFloatStorage\n.")
                .find("storage type 'torch.ComplexFloatStorage' is not supported"),
            std::string::npos);
  // Allow-listed names may only be called as torch.save calls them.
  EXPECT_NE(error_of("\x80\x02"
                     "ccollections\nOrderedDict\n(" +
                     k(1) + "tR.")
                .find("OrderedDict()"),
            std::string::npos);
  EXPECT_NE(error_of("\x80\x02"
                     "ctorch\nFloatStorage\n)R.")
                .find("cannot be called"),
            std::string::npos);
}

TEST(Unpickler, TensorsMustLieInsideTheirStorage) {
  // A 2x3 tensor with strides (3, 1) needs 6 elements from its offset.
  const std::string size = k(2) + k(3) + "\x86", stride = k(3) + k(1) + "\x86";
  const pk::Unpickled ok = unpickle(tensor_pickle(7, 1, size, stride));
  ASSERT_EQ(ok.root->kind, pk::Kind::Tensor);
  EXPECT_EQ(ok.root->sizes, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ok.root->integer, 1);
  ASSERT_EQ(ok.storages.size(), 1u);
  EXPECT_EQ(ok.storages[0]->integer, 7);
  const std::string m = error_of(tensor_pickle(6, 1, size, stride));
  EXPECT_NE(m.find("reaches element 6, outside storage '0' of 6 elements"), std::string::npos) << m;
  EXPECT_NE(error_of(tensor_pickle(6, 0, size, k(3) + "\x85")).find("stride has 1"),
            std::string::npos);
  EXPECT_NE(error_of(tensor_pickle(6, 0, k(2) + "\x8a\x01\xff\x86", stride)).find("negative"),
            std::string::npos);
}

TEST(Unpickler, RebuildFromTypeV2) {
  // PyTorch 2's pickle of a tensor with Python state: _rebuild_from_type_v2(_rebuild_tensor_v2,
  // torch.Tensor, (storage, ...), {'note': 1}); the state is dropped.
  const std::string inner = tensor_pickle(4, 0, k(4) + "\x85", k(1) + "\x85");
  const std::string args = inner.substr(2 + 33, inner.size() - 2 - 33 - 2);  // "(...t"
  ASSERT_EQ(args.front(), '(');
  const std::string p =
      "\x80\x02"
      "ctorch._tensor\n_rebuild_from_type_v2\n("s +
      "ctorch._utils\n_rebuild_tensor_v2\n" + "ctorch._tensor\nTensor\n" + args + "}" + u("note") +
      k(1) + "stR.";
  const pk::Unpickled r = unpickle(p);
  ASSERT_EQ(r.root->kind, pk::Kind::Tensor);
  EXPECT_EQ(r.root->sizes, (std::vector<int64_t>{4}));
  // Its func must be a tensor rebuild function and its type torch.Tensor or Parameter.
  const std::string bad =
      "\x80\x02"
      "ctorch._tensor\n_rebuild_from_type_v2\n("s +
      "ctorch._utils\n_rebuild_tensor_v2\n" + "ccollections\nOrderedDict\n" + args + "NtR.";
  EXPECT_NE(error_of(bad).find("not torch.Tensor or torch.nn.Parameter"), std::string::npos)
      << error_of(bad);
}

TEST(Unpickler, MalformedInputIsAnError) {
  EXPECT_NE(error_of("\x80\x02" + u("abc").substr(0, 6)).find("truncated"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02h\x05.").find("memo entry 5"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02t.").find("no MARK"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02.").find("stack underflow"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02(.").find("stack underflow"), std::string::npos);
  EXPECT_NE(error_of("\x80\x02"
                     "I1\n.")
                .find("unsupported opcode 0x49 'I'"),
            std::string::npos);
  EXPECT_NE(error_of("\x80\x02X\x02\x00\x00\x00\xff\xfe."s).find("not valid UTF-8"),
            std::string::npos);
  EXPECT_NE(error_of("\x80\x02\x8a\x09" + std::string(9, '\x01') + ".").find("64 bits"),
            std::string::npos);
  EXPECT_NE(error_of("\x80\x02"
                     "K\x01"
                     "K\x02"
                     "K\x03"
                     "s.")
                .find("SETITEM on an int"),
            std::string::npos);
}

TEST(Unpickler, HardLimits) {
  pk::Limits small;
  small.max_depth = 8;
  small.max_objects = 100;
  small.max_memo = 4;
  small.max_string = 16;
  EXPECT_NE(error_of("\x80\x02" + std::string(9, '('), small).find("more than 8 open MARKs"),
            std::string::npos);
  EXPECT_NE(error_of("\x80\x02" + std::string(101, ')'), small).find("more than 100 objects"),
            std::string::npos);
  EXPECT_NE(error_of("\x80\x02)q\x00q\x01q\x02q\x03q\x04."s, small).find("more than 4 memo"),
            std::string::npos);
  EXPECT_NE(error_of("\x80\x02" + u(std::string(17, 'x')) + ".", small).find("17 bytes"),
            std::string::npos);
  // Nesting built without MARKs (TUPLE1 on TUPLE1 ...) and cycles are caught where the graph is
  // walked: a list holding itself, and tuples nested deeper than max_depth.
  const pk::Unpickled cycle = unpickle("\x80\x02]q\x00h\x00\x61."s, small);
  EXPECT_EQ(cycle.root->items[0], cycle.root);
  serialize::ValueBuilder builder(std::nullopt, nullptr, small);
  EXPECT_NE(test::error_message([&] { builder.convert(*cycle.root); }).find("nests deeper than 8"),
            std::string::npos);
  const pk::Unpickled deep = unpickle("\x80\x02)" + std::string(9, '\x85') + ".", small);
  serialize::ValueBuilder builder2(std::nullopt, nullptr, small);
  EXPECT_NE(test::error_message([&] { builder2.convert(*deep.root); }).find("nests deeper"),
            std::string::npos);
}
