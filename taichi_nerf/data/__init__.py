"""Dataset loaders (numpy + imageio only; no torch, no taichi), and the built-in scene.

The built-in scene (``data.builtin``, ``data.builtin_variants``; not imported here) is the
exception: it renders its images with a Taichi kernel, and starts Taichi through the
torch-free ``taichi_nerf.kernels.runtime`` when it has to render and nothing has yet.

``load_dataset(path, split, downscale, holdout, scene)`` detects the format of
a folder and returns a ``Dataset`` (see dataset.py for fields and units);
``load_cameras`` (same arguments) returns the same split's ``Cameras`` (poses,
intrinsics, sizes, scene transform) from the metadata alone, decoding no image.

Formats: Blender / NeRF-synthetic (``transforms_{train,val,test}.json``),
instant-ngp (``transforms.json``), LLFF (``poses_bounds.npy``) and COLMAP
(``sparse/0``).

Splits: ``split`` is train, val, test or all. Blender folders use their split
files ("all" = every split file present; ``holdout`` is ignored). The other
formats have no splits: with ``holdout=K`` the frames with index % K == 0
(file order for instant-ngp, name order for COLMAP and LLFF) are val and test
and the rest are train; with ``holdout=0`` (default) train, val and test are
all frames. COLMAP and LLFF fit their scene transform on all frames, so every
split of a folder gets the same one.

Every problem with the input raises ``DataError``, whose one-line message
names the file at fault.
"""
from .dataset import Cameras, Dataset
from .errors import DataError
from .images import downscale_area, load_images, read_image
from .loader import FORMATS, detect_format, load_cameras, load_dataset
from .scene import SceneTransform, fit_scene, to_model_space

__all__ = [
    "Cameras", "Dataset", "DataError", "FORMATS", "SceneTransform", "detect_format",
    "downscale_area", "fit_scene", "load_cameras", "load_dataset", "load_images", "read_image",
    "to_model_space",
]
