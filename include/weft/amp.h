// Mixed-precision training (torch.amp): autocast regions and the loss scaler.
#pragma once

#include "weft/amp/autocast.h"
#include "weft/amp/grad_scaler.h"
