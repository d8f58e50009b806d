// Mixed-precision training helpers (torch.amp): the loss scaler.
#pragma once

#include "weft/amp/grad_scaler.h"
