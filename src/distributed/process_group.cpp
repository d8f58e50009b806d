#include "weft/distributed/process_group.h"

namespace weft::dist {

std::string to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::SUM:
      return "SUM";
    case ReduceOp::AVG:
      return "AVG";
    case ReduceOp::MAX:
      return "MAX";
    case ReduceOp::MIN:
      return "MIN";
    case ReduceOp::PRODUCT:
      return "PRODUCT";
  }
  return "?";
}

}  // namespace weft::dist
