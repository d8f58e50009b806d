// The ranks' error files (torchelastic's TORCHELASTIC_ERROR_FILE): a private directory per group
// run, one file per rank, passed as WEFT_ERROR_FILE; a rank writes its fatal error there
// (weft::dist::record_error). weft-run reads failed ranks' files for a rank they name as stalled,
// "rank K did not reach collective #N ...": Note [Collective sequence numbers] in
// docs/ARCHITECTURE.md. Standard library and POSIX only.
#pragma once

#include <optional>
#include <string>

namespace weft_run {

class ErrorFiles {
 public:
  ErrorFiles();   // makes the directory under $TMPDIR (or /tmp); without one, paths are ""
  ~ErrorFiles();  // removes it and the files in it
  ErrorFiles(const ErrorFiles&) = delete;
  ErrorFiles& operator=(const ErrorFiles&) = delete;

  std::string path(int global_rank) const;
  std::string read(int global_rank) const;  // "" if the rank wrote nothing

 private:
  std::string dir_;
};

// The rank(s) an error message names as behind in a collective ("rank 1", "ranks 1, 3"), if any.
std::optional<std::string> stalled_ranks(const std::string& message);

}  // namespace weft_run
