"""Counter-based random numbers: a pure function of (seed, stream, index), the same on every
arch and thread schedule.

``ti.random`` keeps one state per hardware thread, so which value a loop iteration gets
depends on the schedule (two runs on 2 CPU threads differ). Training on the device draws
its rays and occupancy cells here instead, so a seed gives the same run on any arch and the
draws can be reproduced on the host (:func:`uniform_np`, used by the tests).
"""
import numpy as np
import taichi as ti

# lowbias32 (Chris Wellons' integer hash search): full avalanche in 2 multiplies
_M1, _M2 = 0x7FEB352D, 0x846CA68B
_SCALE = 1.0 / (1 << 24)


@ti.func
def mix32(x):
    """A u32 -> a well-mixed u32."""
    x ^= x >> ti.u32(16)
    x *= ti.u32(_M1)
    x ^= x >> ti.u32(15)
    x *= ti.u32(_M2)
    x ^= x >> ti.u32(16)
    return x


@ti.func
def uniform(seed, stream, index):
    """A float32 in [0, 1) for (seed, stream, index), all u32: 24 random bits."""
    h = mix32(ti.cast(seed, ti.u32) ^ mix32(ti.cast(stream, ti.u32) ^ mix32(ti.cast(index, ti.u32))))
    return ti.cast(h >> ti.u32(8), ti.f32) * _SCALE


def _mix32_np(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint32)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint32(16)
        x *= np.uint32(_M1)
        x ^= x >> np.uint32(15)
        x *= np.uint32(_M2)
        x ^= x >> np.uint32(16)
    return x


def uniform_np(seed: int, stream, index) -> np.ndarray:
    """:func:`uniform` on the host (numpy, broadcasting stream and index) -> float32 in [0, 1)."""
    stream = np.asarray(stream, np.int64).astype(np.uint32)
    index = np.asarray(index, np.int64).astype(np.uint32)
    h = _mix32_np(np.uint32(seed & 0xFFFFFFFF) ^ _mix32_np(stream ^ _mix32_np(index)))
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(_SCALE)
