// Internal: the settings of the shared-memory all-reduce (Note [Shared-memory all-reduce] in
// docs/ARCHITECTURE.md), read from the environment. A malformed value is a DistError naming the
// variable, never a silent default.
#pragma once

#include <cstddef>
#include <string>

namespace weft::dist::shm {

// WEFT_SHM: "0" turns the path off on this rank (and so for its whole group); unset, "" or "1"
// leaves it on. chunk: WEFT_SHM_CHUNK_BYTES (see chunk_bytes). Read once, as a group is made.
struct Settings {
  bool enabled = true;
  size_t chunk = 0;
};
Settings settings_from_env();

// Which ranks share a host: WEFT_SHM_HOST_ID if set (as NCCL_HOSTID; network-namespace tests give
// each "host" its own), else "<hostname>/<boot id>": a host name alone may repeat across
// machines, a boot id differs between machines and between boots.
std::string host_id();

// WEFT_SHM_CHUNK_BYTES (default kDefaultChunkBytes): the bytes each rank stages per pipeline
// step, rounded up to 64. Only the segment's creator reads it; the others take it from the
// segment, so the ranks of a host always agree.
inline constexpr size_t kDefaultChunkBytes = 256 * 1024;
size_t chunk_bytes();
bool enabled_by_env();

}  // namespace weft::dist::shm
