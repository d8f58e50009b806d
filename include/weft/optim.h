// Everything in weft::optim.
#pragma once

#include "weft/optim/adam.h"
#include "weft/optim/lr_scheduler.h"
#include "weft/optim/optimizer.h"
#include "weft/optim/sgd.h"
