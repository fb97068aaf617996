"""COLMAP loader on text and binary models written here."""
import struct

import imageio.v3 as iio
import numpy as np
import pytest

from taichi_nerf.data import DataError, detect_format, load_dataset, to_model_space

W, H = 8, 6
MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "SIMPLE_RADIAL": 2, "RADIAL": 3, "OPENCV": 4,
             "OPENCV_FISHEYE": 5}


def rot_to_quat(r):
    """Rotation matrix -> unit quaternion (w, x, y, z) (Shepperd's method, any rotation)."""
    tr = np.trace(r)
    if tr > 0:
        s = 2 * np.sqrt(tr + 1)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(r)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2 * np.sqrt(1 + r[i, i] - r[j, j] - r[k, k])
        q = np.zeros(4)
        q[0] = (r[k, j] - r[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (r[j, i] + r[i, j]) / s
        q[1 + k] = (r[k, i] + r[i, k]) / s
    return np.asarray(q)


def colmap_camera_looking_at_origin(eye):
    """COLMAP (qvec, tvec) for a camera at ``eye`` looking at the origin, image up = world +z."""
    fwd = -np.asarray(eye, np.float64) / np.linalg.norm(eye)
    right = np.cross(fwd, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    r_c2w = np.stack([right, down, fwd], axis=1)  # OpenCV axes: x right, y down, z forward
    r_w2c = r_c2w.T
    return rot_to_quat(r_w2c), -r_w2c @ np.asarray(eye, np.float64)


EYES = [[0, -4, 0], [4, 0, 0], [0, 4, 0], [-4, 0, 0]]
CAMERAS = {1: ("PINHOLE", [10.0, 11.0, 4.0, 3.0])}


def write_images(root, names):
    (root / "images").mkdir(parents=True, exist_ok=True)
    for i, n in enumerate(names):
        iio.imwrite(root / "images" / n, np.full((H, W, 3), 50 * i, np.uint8))


def write_text_model(folder, cameras, images):
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["# Camera list with one line of data per camera:"]
    lines += [f"{cid} {model} {W} {H} " + " ".join(map(repr, params))
              for cid, (model, params) in cameras.items()]
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:", "# Number of images: x"]
    for iid, (q, t, cid, name) in enumerate(images, 1):
        lines.append(f"{iid} " + " ".join(map(repr, [*map(float, q), *map(float, t)])) + f" {cid} {name}")
        lines.append("" if iid % 2 else "1.5 2.5 -1 3.0 4.0 7")  # POINTS2D lines, some empty
    (folder / "images.txt").write_text("\n".join(lines) + "\n")


def write_binary_model(folder, cameras, images):
    folder.mkdir(parents=True, exist_ok=True)
    data = struct.pack("<Q", len(cameras))
    for cid, (model, params) in cameras.items():
        data += struct.pack("<iiQQ", cid, MODEL_IDS[model], W, H) + struct.pack(f"<{len(params)}d", *params)
    (folder / "cameras.bin").write_bytes(data)
    data = struct.pack("<Q", len(images))
    for iid, (q, t, cid, name) in enumerate(images, 1):
        data += struct.pack("<i7di", iid, *q, *t, cid) + name.encode() + b"\0"
        data += struct.pack("<Q", 2) + struct.pack("<ddqddq", 1.0, 2.0, -1, 3.0, 4.0, 5)
    (folder / "images.bin").write_bytes(data)


def make_colmap(root, binary=False, cameras=CAMERAS, cam_of=lambda i: 1):
    images = []
    for i, eye in enumerate(EYES):
        q, t = colmap_camera_looking_at_origin(eye)
        images.append((q, t, cam_of(i), f"img_{i}.png"))
    images.reverse()  # the loader sorts by name
    (write_binary_model if binary else write_text_model)(root / "sparse" / "0", cameras, images)
    write_images(root, [f"img_{i}.png" for i in range(len(EYES))])
    return root


def test_colmap_known_camera_by_hand(tmp_path):
    # Camera at (0, -4, 0) looking at the origin: world-to-camera is a +90 degree turn about x.
    s = np.sqrt(0.5)
    write_text_model(tmp_path / "sparse" / "0", CAMERAS,
                     [([s, s, 0, 0], [0, 0, 4], 1, "a.png"), ([s, s, 0, 0], [1, 0, 4], 1, "b.png")])
    write_images(tmp_path, ["a.png", "b.png"])
    ds = load_dataset(tmp_path, "all")
    expected = np.array([[1, 0, 0, 0], [0, 0, -1, -4], [0, 1, 0, 0], [0, 0, 0, 1.0]])
    np.testing.assert_allclose(ds.poses[0], expected, atol=1e-6)


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_poses_intrinsics_and_scene(tmp_path, binary):
    root = make_colmap(tmp_path, binary=binary)
    assert detect_format(root) == "colmap"
    ds = load_dataset(root, "all", downscale=2)
    assert ds.format == "colmap" and len(ds) == 4 and ds.images.shape == (4, 3, 4, 3)
    assert [n.rsplit("/", 1)[1] for n in ds.names] == [f"img_{i}.png" for i in range(4)]
    np.testing.assert_allclose(ds.intrinsics, [[5.0, 5.5, 2.0, 1.5]] * 4, rtol=1e-6)
    np.testing.assert_array_equal(ds.distortion, 0)
    for pose, eye in zip(ds.poses, EYES):
        np.testing.assert_allclose(pose[:3, 3], eye, atol=1e-5)  # camera centre
        np.testing.assert_allclose(-pose[:3, 2], -np.asarray(eye) / 4, atol=1e-6)  # looks at origin
        np.testing.assert_allclose(pose[:3, 1], [0, 0, 1], atol=1e-6)  # OpenGL up = world up
        np.testing.assert_allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-6)
    # Look-at point -> 0.5; mean camera distance 4 -> 1.32 (colmap2nerf x instant-ngp 0.33).
    assert ds.scene_scale == pytest.approx(0.33)
    np.testing.assert_allclose(ds.scene_offset, 0.5, atol=1e-6)
    assert ds.aabb_scale == 4
    assert ds.background is None


def test_colmap_text_and_binary_agree(tmp_path):
    a = load_dataset(make_colmap(tmp_path / "t"), "all")
    b = load_dataset(make_colmap(tmp_path / "b", binary=True), "all")
    np.testing.assert_allclose(a.poses, b.poses, atol=1e-6)
    np.testing.assert_allclose(a.images, b.images)
    assert a.scene == b.scene


def test_colmap_camera_models(tmp_path):
    cams = {1: ("SIMPLE_PINHOLE", [10.0, 4.0, 3.0]), 2: ("PINHOLE", [10.0, 11.0, 4.1, 3.1]),
            3: ("SIMPLE_RADIAL", [12.0, 4.2, 3.2, 0.1]), 4: ("RADIAL", [13.0, 4.3, 3.3, 0.1, -0.2]),
            5: ("OPENCV", [14.0, 15.0, 4.4, 3.4, 0.1, -0.2, 0.01, -0.02])}
    cams = {**cams, 6: ("OPENCV", [1.0] * 8)}
    root = make_colmap(tmp_path, binary=True, cameras=cams, cam_of=lambda i: i + 2)
    ds = load_dataset(root, "all")
    np.testing.assert_allclose(ds.intrinsics, [[10, 11, 4.1, 3.1], [12, 12, 4.2, 3.2],
                                               [13, 13, 4.3, 3.3], [14, 15, 4.4, 3.4]], rtol=1e-6)
    np.testing.assert_allclose(ds.distortion, [[0, 0, 0, 0], [0.1, 0, 0, 0], [0.1, -0.2, 0, 0],
                                               [0.1, -0.2, 0.01, -0.02]], rtol=1e-6)
    root2 = make_colmap(tmp_path / "s", cameras={1: cams[1]})
    np.testing.assert_allclose(load_dataset(root2, "all").intrinsics[0], [10, 10, 4, 3])


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_unsupported_model_names_model_and_file(tmp_path, binary):
    cams = {1: ("OPENCV_FISHEYE", [10.0, 10.0, 4.0, 3.0, 0.1, 0.0, 0.0, 0.0])}
    root = make_colmap(tmp_path, binary=binary, cameras=cams)
    with pytest.raises(DataError, match="OPENCV_FISHEYE") as e:
        load_dataset(root)
    ext = "bin" if binary else "txt"
    assert str(e.value).startswith(str(root / "sparse" / "0" / f"cameras.{ext}") + ":")


def test_colmap_up_alignment_and_holdout(tmp_path):
    # Same rig with the world tilted: the loader turns the mean camera up into +z.
    tilt = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0.0]])  # world z -> -y
    images = []
    for i, eye in enumerate(EYES):
        q, t = colmap_camera_looking_at_origin(eye)
        r_w2c = np.linalg.inv(tilt @ np.linalg.inv(_quat_to_rot(q)))
        images.append((rot_to_quat(r_w2c), t + np.zeros(3), 1, f"img_{i}.png"))
    write_text_model(tmp_path / "sparse" / "0", CAMERAS, images)
    write_images(tmp_path, [f"img_{i}.png" for i in range(4)])
    ds = load_dataset(tmp_path, "all")
    np.testing.assert_allclose(ds.poses[:, :3, 1], [[0, 0, 1]] * 4, atol=1e-6)
    model = to_model_space(ds.poses, ds.scene_scale, ds.scene_offset)
    np.testing.assert_allclose(np.linalg.norm(model[:, :3, 3] - 0.5, axis=1), 1.32, atol=1e-5)
    tr, va = load_dataset(tmp_path, "train", holdout=2), load_dataset(tmp_path, "val", holdout=2)
    assert (len(tr), len(va)) == (2, 2) and tr.scene == va.scene
    np.testing.assert_allclose(va.poses, ds.poses[[0, 2]])


def _quat_to_rot(q):
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def test_colmap_image_size_must_match_camera(tmp_path):
    root = make_colmap(tmp_path)
    iio.imwrite(root / "images" / "img_2.png", np.zeros((H, W + 2, 3), np.uint8))
    with pytest.raises(DataError, match="metadata says 8x6") as e:
        load_dataset(root, "all")
    assert str(e.value).startswith(str(root / "images" / "img_2.png") + ":")


def test_colmap_truncated_binary(tmp_path):
    root = make_colmap(tmp_path, binary=True)
    p = root / "sparse" / "0" / "images.bin"
    p.write_bytes(p.read_bytes()[:-30])
    with pytest.raises(DataError, match="truncated") as e:
        load_dataset(root)
    assert str(p) in str(e.value)


def write_points(folder, pts, binary):
    if binary:
        data = struct.pack("<Q", len(pts))
        for i, p in enumerate(pts, 1):
            data += struct.pack("<Q3d3Bd", i, *p, 10, 20, 30, 0.5)
            data += struct.pack("<Q", 2) + struct.pack("<iiii", 1, 0, 2, 1)
        (folder / "points3D.bin").write_bytes(data)
    else:
        lines = ["# 3D point list with one line of data per point:"]
        lines += [f"{i} {float(p[0])!r} {float(p[1])!r} {float(p[2])!r} 10 20 30 0.5 1 0 2 1"
                  for i, p in enumerate(pts, 1)]
        (folder / "points3D.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_sparse_points_size_the_box(tmp_path, binary):
    # cameras at distance 4 fit aabb_scale 4; a wall of points at distance 20 (model
    # units 20 x 0.33 = 6.6 from the centre) needs aabb_scale 16; one far outlier must not count
    root = make_colmap(tmp_path, binary=binary)
    assert load_dataset(root, "all").aabb_scale == 4
    rng = np.random.default_rng(0)
    wall = np.concatenate([rng.uniform(-20, 20, (400, 2)), np.full((400, 1), 20.0)], 1)[:, [0, 2, 1]]
    pts = np.concatenate([wall, [[1e4, 0, 0]]])
    write_points(root / "sparse" / "0", pts, binary)
    ds = load_dataset(root, "all")
    assert ds.aabb_scale == 16
    model = wall * ds.scene_scale + ds.scene_offset  # the cameras' up is world +z already
    assert np.abs(model - 0.5).max() <= ds.aabb_scale / 2


def test_colmap_bad_points_file_names_the_file(tmp_path):
    root = make_colmap(tmp_path)
    (root / "sparse" / "0" / "points3D.txt").write_text("1 2.0 nope 4\n")
    with pytest.raises(DataError, match="points3D.txt"):
        load_dataset(root, "all")


def _project(eye, p):
    """Pixel (x, y) of world point p in the PINHOLE camera of CAMERAS at eye looking at the origin."""
    q, t = colmap_camera_looking_at_origin(eye)
    fx, fy, cx, cy = CAMERAS[1][1]
    pc = _quat_to_rot(q) @ p + t
    return np.array([fx * pc[0] / pc[2] + cx, fy * pc[1] / pc[2] + cy])


def write_observed_model(folder, pts, errors, binary):
    """A model of the EYES cameras in which every camera observes every point of pts it sees
    (plus one keypoint without a point); points list track lengths from those observations."""
    folder.mkdir(parents=True, exist_ok=True)
    obs = {i: [] for i in range(len(EYES))}
    track = np.zeros(len(pts), int)
    for i, eye in enumerate(EYES):
        for k, p in enumerate(pts):
            xy = _project(eye, p)
            if 0 <= xy[0] < W and 0 <= xy[1] < H:
                obs[i].append((xy[0], xy[1], k + 1))
                track[k] += 1
        obs[i].append((0.5, 0.5, -1))
    cams = write_binary_model if binary else write_text_model
    cams(folder, CAMERAS, [])  # cameras file; images written below with their keypoints
    if binary:
        data = struct.pack("<Q", len(EYES))
        for i, eye in enumerate(EYES):
            q, t = colmap_camera_looking_at_origin(eye)
            data += struct.pack("<i7di", i + 1, *q, *t, 1) + f"img_{i}.png".encode() + b"\0"
            data += struct.pack("<Q", len(obs[i]))
            data += b"".join(struct.pack("<ddq", x, y, pid) for x, y, pid in obs[i])
        (folder / "images.bin").write_bytes(data)
        data = struct.pack("<Q", len(pts))
        for k, p in enumerate(pts):
            data += struct.pack("<Q3d3Bd", k + 1, *p, 10, 20, 30, errors[k])
            data += struct.pack("<Q", track[k]) + struct.pack("<ii", 1, 0) * track[k]
        (folder / "points3D.bin").write_bytes(data)
    else:
        lines = []
        for i, eye in enumerate(EYES):
            q, t = colmap_camera_looking_at_origin(eye)
            lines.append(f"{i + 1} " + " ".join(map(repr, [*map(float, q), *map(float, t)]))
                         + f" 1 img_{i}.png")
            lines.append(" ".join(f"{float(x)!r} {float(y)!r} {pid}" for x, y, pid in obs[i]))
        (folder / "images.txt").write_text("\n".join(lines) + "\n")
        lines = [f"{k + 1} " + " ".join(repr(float(v)) for v in p) + f" 10 20 30 {float(errors[k])!r} "
                 + " ".join("1 0" for _ in range(track[k])) for k, p in enumerate(pts)]
        (folder / "points3D.txt").write_text("\n".join(lines) + "\n")
    write_images(folder.parent.parent, [f"img_{i}.png" for i in range(len(EYES))])
    return track


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_sparse_depth_observations(tmp_path, binary):
    """Every trusted point a training image observes becomes one (image, x, y, distance) row
    whose ray from that camera reaches the point; untrusted points (short track, large
    reprojection error) and keypoints without a point are left out; held-out images too."""
    rng = np.random.default_rng(1)
    pts = rng.uniform(-0.6, 0.6, (40, 3))
    errors = np.where(np.arange(40) % 5 == 0, 3.0, 0.5)  # every 5th point: error above 2 px
    track = write_observed_model(tmp_path / "sparse" / "0", pts, errors, binary)
    dist = np.linalg.norm(pts - pts.mean(0), axis=1)
    inner = dist <= np.quantile(dist, 0.95)  # the box's share of the points; the rest are outliers
    trusted = (track >= 3) & (errors <= 2.0) & inner
    assert trusted.sum() >= 5 and (~trusted).sum() >= 5
    ds = load_dataset(tmp_path, "train", holdout=2)  # images 1 and 3 (names img_1, img_3)
    kept = [1, 3]
    want = sum(1 for i in kept for k in np.flatnonzero(trusted)
               if 0 <= _project(EYES[i], pts[k])[0] < W and 0 <= _project(EYES[i], pts[k])[1] < H)
    assert ds.depth_obs.shape == (want, 4)
    fx, fy, cx, cy = CAMERAS[1][1]
    for j, x, y, dist in ds.depth_obs.astype(np.float64):
        c2w = ds.poses[int(j)].astype(np.float64)
        d = c2w[:3, :3] @ np.array([(x - cx) / fx, -(y - cy) / fy, -1.0])
        hit = c2w[:3, 3] + dist * d / np.linalg.norm(d)
        # the cameras' up is world +z already, so the loader's world is the model's world
        err = np.linalg.norm(pts[trusted] - hit, axis=1).min()
        assert err < 1e-4
    # downscale 2: the same rays through pixel coordinates halved
    half = load_dataset(tmp_path, "train", holdout=2, downscale=2)
    np.testing.assert_allclose(half.depth_obs, ds.depth_obs * [1, 0.5, 0.5, 1])


def test_colmap_without_points_has_no_depth(tmp_path):
    assert load_dataset(make_colmap(tmp_path), "all").depth_obs is None


def test_colmap_quaternions_use_the_one_pose_module():
    """COLMAP's qvec goes through data.poses.quat_to_rotation, the one camera paths use too."""
    from taichi_nerf.render import camera_paths
    from taichi_nerf.data import colmap, colmap_model, poses

    assert colmap.quat_to_rotation is poses.quat_to_rotation is camera_paths.quat_to_rotation
    assert not hasattr(colmap_model, "qvec_to_rotmat")
    r = poses.look_at([1.0, -2.0, 0.5])[:3, :3]
    np.testing.assert_allclose(poses.quat_to_rotation(poses.rotation_to_quat(r)), r, atol=1e-12)
    q, t = colmap_camera_looking_at_origin([0.0, -4.0, 1.0])
    np.testing.assert_allclose(colmap.colmap_to_c2w(q, t)[:3, 3], [0.0, -4.0, 1.0], atol=1e-12)
