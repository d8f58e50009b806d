// The two container formats of torch.save, each read whole from memory into a TorchValue, and
// the dispatch that lets weft::load read them beside safetensors files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "serialize/pickle/unpickler.h"
#include "weft/serialize/torch_load.h"

namespace weft::serialize {

// The limits every torch.save pickle is unpickled under.
const pickle::Limits& torch_pickle_limits();

// PyTorch >= 1.6: a zip archive <dir>/data.pkl, <dir>/data/<key> (one record per storage).
TorchValue load_torch_zip(const uint8_t* data, size_t size, std::optional<Device> map_location);
// Before 1.6: pickles of the magic number, protocol version, system info, the object and its
// storage keys, then each storage's element count (int64) and bytes.
TorchValue load_torch_legacy(const uint8_t* data, size_t size, std::optional<Device> map_location);

// weft::load of a file that is not safetensors: a torch.save checkpoint loads as its state_dict
// (metadata: the checkpoint dict's scalar entries, such as 'epoch'); a file of another known
// kind is an error naming it. nullopt for safetensors or an unrecognised file.
std::optional<OrderedDict<Tensor>> load_if_not_safetensors(
    const std::string& path, Device device, std::map<std::string, std::string>* metadata);
std::optional<OrderedDict<Tensor>> load_if_not_safetensors(
    const std::vector<uint8_t>& bytes, std::map<std::string, std::string>* metadata);

}  // namespace weft::serialize
