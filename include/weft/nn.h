// Everything in weft::nn: Module, layers, losses, functional and init.
#pragma once

#include "weft/nn/activation.h"
#include "weft/nn/batchnorm.h"
#include "weft/nn/channel_shuffle.h"
#include "weft/nn/container.h"
#include "weft/nn/conv.h"
#include "weft/nn/functional.h"
#include "weft/nn/init.h"
#include "weft/nn/linear.h"
#include "weft/nn/loss.h"
#include "weft/nn/module.h"
#include "weft/nn/pooling.h"
#include "weft/nn/state_dict.h"
