// Reverse-mode autograd (torch.autograd): the graph that differentiable ops record
// (weft/autograd/graph.h) and the engine that runs it backward (weft/autograd/engine.h).
#pragma once

#include "weft/autograd/engine.h"
#include "weft/autograd/graph.h"
