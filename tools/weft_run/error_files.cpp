#include "error_files.h"

#include <dirent.h>
#include <unistd.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace weft_run {

namespace {

constexpr size_t kMaxMessage = 4096;  // a report quotes at most this much of a rank's error

}  // namespace

ErrorFiles::ErrorFiles() {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/weft-run-XXXXXX";
  if (mkdtemp(tmpl.data())) dir_ = tmpl;
}

ErrorFiles::~ErrorFiles() {
  if (dir_.empty()) return;
  // The ranks may leave temporary files behind if killed mid-write: remove whatever is there.
  if (DIR* d = opendir(dir_.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string name = e->d_name;
      if (name != "." && name != "..") unlink((dir_ + "/" + name).c_str());
    }
    closedir(d);
  }
  rmdir(dir_.c_str());
}

std::string ErrorFiles::path(int global_rank) const {
  return dir_.empty() ? "" : dir_ + "/rank" + std::to_string(global_rank) + ".err";
}

std::string ErrorFiles::read(int global_rank) const {
  if (dir_.empty()) return "";
  std::ifstream in(path(global_rank));
  std::ostringstream ss;
  ss << in.rdbuf();
  std::string s = ss.str().substr(0, kMaxMessage);
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';  // one line in weft-run's report
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

std::optional<std::string> stalled_ranks(const std::string& message) {
  const size_t at = message.find(" did not reach collective #");
  if (at == std::string::npos) return std::nullopt;
  const size_t start = message.rfind("rank", at);
  if (start == std::string::npos) return std::nullopt;
  std::string who = message.substr(start, at - start);  // "rank 1", "ranks 1, 3"
  const size_t list = who.find(' ');
  if (list == std::string::npos || list + 1 >= who.size()) return std::nullopt;
  for (size_t i = list + 1; i < who.size(); ++i) {
    const char c = who[i];
    if (!std::isdigit(static_cast<unsigned char>(c)) && c != ',' && c != ' ') return std::nullopt;
  }
  return who;
}

}  // namespace weft_run
