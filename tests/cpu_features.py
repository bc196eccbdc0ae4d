"""Skip markers for tests that need a CPU feature (shared by the engine's unit and model tests)."""

from __future__ import annotations

import pytest

from embedserve.engine.backends.torch import cpu_has_fast_int8
from embedserve.engine.prepacked import onednn_bf16_supported

NEEDS_FAST_INT8 = pytest.mark.skipif(
    not cpu_has_fast_int8(), reason="no AVX512-VNNI or AMX on this CPU: oneDNN's int8 kernel is refused here"
)
NEEDS_ONEDNN_BF16 = pytest.mark.skipif(
    not onednn_bf16_supported(), reason="oneDNN has no bf16 kernels on this CPU: --prepacked-weights on cannot run here"
)
