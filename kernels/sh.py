"""Spherical-harmonics direction encoding, degree 1-4, with instant-ngp's constants."""
import functools

import taichi as ti

# Real SH basis constants as in instant-ngp's encoding (degree 4 -> 16 outputs).
C0 = 0.28209479177387814
C1 = 0.48860251190291987
C2 = (1.0925484305920792, -1.0925484305920792, 0.94617469575755997,
      -1.0925484305920792, 0.54627421529603959)
C3 = (0.59004358992664352, 2.8906114426405538, 0.45704579946446572,
      0.3731763325901154, 0.45704579946446572, 1.4453057213202769,
      0.59004358992664352)


def sh_dim(degree: int) -> int:
    """Number of SH outputs for `degree` (1..4): degree^2."""
    if degree not in (1, 2, 3, 4):
        raise ValueError(f"SH degree must be 1, 2, 3 or 4, got {degree}")
    return degree * degree


def make_sh_func(degree: int):
    """A @ti.func (d: unit vec3) -> ti.Vector of degree^2 SH values."""
    n = sh_dim(degree)

    @ti.func
    def sh_encode(d):
        x, y, z = d[0], d[1], d[2]
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        out = ti.Vector.zero(ti.f32, n)
        out[0] = C0
        if ti.static(degree > 1):
            out[1] = -C1 * y
            out[2] = C1 * z
            out[3] = -C1 * x
        if ti.static(degree > 2):
            out[4] = C2[0] * xy
            out[5] = C2[1] * yz
            out[6] = C2[2] * zz - 0.31539156525252005
            out[7] = C2[3] * xz
            out[8] = C2[4] * (xx - yy)
        if ti.static(degree > 3):
            out[9] = C3[0] * y * (-3.0 * xx + yy)
            out[10] = C3[1] * xy * z
            out[11] = C3[2] * y * (1.0 - 5.0 * zz)
            out[12] = C3[3] * z * (5.0 * zz - 3.0)
            out[13] = C3[4] * x * (1.0 - 5.0 * zz)
            out[14] = C3[5] * z * (xx - yy)
            out[15] = C3[6] * x * (-xx + 3.0 * yy)
        return out

    return sh_encode


class SHKernels:
    """``encode(dirs (N,3) unit, out (N,degree^2))`` and the ``sh_encode`` @ti.func."""

    def __init__(self, degree: int):
        self.degree = degree
        self.dim = sh_dim(degree)
        self.sh_encode = sh_encode = make_sh_func(degree)
        n = self.dim

        @ti.kernel
        def encode(dirs: ti.types.ndarray(dtype=ti.f32, ndim=2),
                   out: ti.types.ndarray(dtype=ti.f32, ndim=2)):
            for i in range(dirs.shape[0]):
                v = sh_encode(ti.Vector([dirs[i, 0], dirs[i, 1], dirs[i, 2]]))
                for k in ti.static(range(n)):
                    out[i, k] = v[k]

        self.encode = encode


@functools.lru_cache(maxsize=None)
def sh_kernels(degree: int) -> SHKernels:
    """The compiled SH kernels for `degree`."""
    return SHKernels(degree)
