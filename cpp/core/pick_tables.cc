// The host copy of the sampled pick's exp table (cpp/core/pick_tables.h, generated from V8's Math.exp).
#include "core/pick.h"

namespace qwen {
const double kPickExpTable[kPickExpSteps * kPickExpMax + 1] = {QWEN_PICK_EXP_TABLE};
}  // namespace qwen
