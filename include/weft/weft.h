// The whole of weft's public API in one include.
#pragma once

#include "weft/allocator.h"
#include "weft/amp.h"
#include "weft/autograd.h"
#include "weft/generator.h"
#include "weft/nn.h"
#include "weft/ops.h"
#include "weft/optim.h"
#include "weft/serialize.h"
#include "weft/tensor.h"
