// weft::data, the C++ counterpart of torch.utils.data: datasets, samplers, the DataLoader and
// dataset readers. Including this header brings in all of them.
#pragma once

#include "weft/data/cifar10.h"
#include "weft/data/dataloader.h"
#include "weft/data/dataset.h"
#include "weft/data/distributed_sampler.h"
#include "weft/data/idx_format.h"
#include "weft/data/mnist.h"
#include "weft/data/sampler.h"
#include "weft/data/subset.h"
