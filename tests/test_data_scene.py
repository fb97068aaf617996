"""Scene transform: world -> model space, and the COLMAP/LLFF normalisation rule."""
import numpy as np
import pytest

from taichi_nerf.data import Dataset, SceneTransform, fit_scene, to_model_space
from taichi_nerf.data.poses import look_at
from taichi_nerf.data.scene import look_at_centre, rotation_between, up_alignment


def ring(n, radius, centre, height=0.0):
    centre = np.asarray(centre, np.float64)
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([look_at(centre + [radius * np.cos(a), radius * np.sin(a), height], centre)
                     for a in angles])


def test_to_model_space_scales_translation_keeps_rotation():
    pose = look_at([3.0, 0.0, 1.0], [0.0, 0.0, 0.0])
    out = to_model_space(pose[None], 0.25, np.array([0.5, 0.4, 0.3]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[0, :3, :3], pose[:3, :3], atol=1e-7)
    np.testing.assert_allclose(out[0, :3, 3], [3 * 0.25 + 0.5, 0.4, 0.25 + 0.3], atol=1e-6)
    np.testing.assert_array_equal(out[0, 3], [0, 0, 0, 1])


def test_dataset_transform_poses_uses_its_scene():
    poses = ring(3, 1.5, [0, 0, 0])
    ds = Dataset(images=np.zeros((3, 2, 2, 3)), intrinsics=np.ones((3, 4)), distortion=np.zeros((3, 4)),
                 poses=poses, width=2, height=2, scene_scale=1 / 3, scene_offset=[0.5, 0.5, 0.5])
    m = ds.transform_poses()
    np.testing.assert_allclose(np.linalg.norm(m[:, :3, 3] - 0.5, axis=1), 0.5, atol=1e-6)
    np.testing.assert_allclose(ds.transform_poses(poses[:1]), m[:1])
    assert ds.scene == SceneTransform(1 / 3, np.full(3, 0.5), 1)


def test_scene_transform_dict_round_trip_and_validation():
    s = SceneTransform(0.2, [0.1, 0.2, 0.3], 8)
    back = SceneTransform.from_dict(s.to_dict())
    assert back.scale == pytest.approx(0.2) and back.aabb_scale == 8
    np.testing.assert_allclose(back.offset, [0.1, 0.2, 0.3])
    with pytest.raises(ValueError):
        SceneTransform(0.2, [0, 0, 0], 3)
    with pytest.raises(ValueError):
        SceneTransform(-1.0, [0, 0, 0], 1)


@pytest.mark.parametrize("a", [[0, 0, 1], [1, 2, 3], [0, 0, -1], [1, 0, 0], [-1, 0, 0]])
def test_rotation_between_is_a_rotation_taking_a_to_b(a):
    a = np.asarray(a, np.float64) / np.linalg.norm(a)
    r = rotation_between(a, np.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(r @ a, [0, 0, 1], atol=1e-9)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-9)
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_up_alignment_turns_camera_up_into_z():
    tilt = np.eye(4)
    tilt[:3, :3] = rotation_between(np.array([0.0, 0.0, 1.0]), np.array([1.0, 2.0, 0.5]))
    poses = tilt @ ring(6, 2.0, [0, 0, 0])
    aligned = up_alignment(poses) @ poses
    np.testing.assert_allclose(aligned[:, :3, 1].mean(0) / np.linalg.norm(aligned[:, :3, 1].mean(0)),
                               [0, 0, 1], atol=1e-9)


def test_look_at_centre_of_orbit_and_of_forward_facing_rig():
    centre = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(look_at_centre(ring(8, 3.0, centre, height=1.0)), centre, atol=1e-6)
    # Nearly parallel axes: the prior at depth_hint in front of the rig decides the depth.
    eyes = [[x, y, 0.0] for x in (-0.1, 0.1) for y in (-0.1, 0.1)]
    rig = np.stack([look_at(e, [0.0, 0.0, -5.0], up=(0, 1, 0)) for e in eyes])
    got = look_at_centre(rig, depth_hint=5.0)
    np.testing.assert_allclose(got, [0, 0, -5.0], atol=1e-2)


def test_fit_scene_centres_look_at_point_and_places_cameras_like_colmap2nerf():
    centre = np.array([10.0, 5.0, -3.0])
    poses = ring(12, 7.0, centre)
    s = fit_scene(poses)
    model = to_model_space(poses, s.scale, s.offset)
    np.testing.assert_allclose(centre * s.scale + s.offset, 0.5, atol=1e-5)
    # colmap2nerf: mean camera distance 4, times instant-ngp's 0.33.
    np.testing.assert_allclose(np.linalg.norm(model[:, :3, 3] - 0.5, axis=1).mean(), 1.32, atol=1e-5)
    assert s.aabb_scale == 4
    assert np.all(np.abs(model[:, :3, 3] - 0.5) <= s.aabb_scale / 2)


def test_fit_scene_grows_aabb_to_hold_extra_points():
    poses = ring(6, 1.0, [0, 0, 0])
    s = fit_scene(poses, extra_points=np.array([[0.0, 0.0, 10.0]]))
    assert s.aabb_scale == 32  # 10 * 1.32 = 13.2 from the centre, * 1.1 margin > 8
