"""Bad input: every case raises DataError with one line that names the file at fault."""
import json

import imageio.v3 as iio
import numpy as np
import pytest

from taichi_nerf.data import DataError, load_dataset


def make_ngp(root, n=3, **meta):
    (root / "images").mkdir(parents=True)
    frames = []
    for i in range(n):
        iio.imwrite(root / "images" / f"{i}.png", np.zeros((4, 6, 3), np.uint8))
        frames.append({"file_path": f"images/{i}.png", "transform_matrix": np.eye(4).tolist()})
    data = {"fl_x": 5.0, "w": 6, "h": 4, "frames": frames}
    data.update(meta)
    (root / "transforms.json").write_text(json.dumps(data))
    return root


def frames_of(root):
    return json.loads((root / "transforms.json").read_text())


def rewrite(root, data):
    (root / "transforms.json").write_text(json.dumps(data))


def check(exc_info, path, *words):
    msg = str(exc_info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path) + ": "), msg
    for w in words:
        assert w in msg, msg


def test_data_error_is_one_line_value_error():
    e = DataError("/x/transforms.json", "malformed JSON:\n  Expecting ','")
    assert isinstance(e, ValueError)
    assert str(e) == "/x/transforms.json: malformed JSON: Expecting ','"


def test_missing_folder(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "nope")
    check(e, tmp_path / "nope", "not found")


def test_path_is_a_file(tmp_path):
    (tmp_path / "f.txt").write_text("x")
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path / "f.txt")
    check(e, tmp_path / "f.txt", "not a folder")


def test_unknown_format_names_expected_files(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path)
    check(e, tmp_path, "unknown dataset format", "transforms.json", "transforms_{train,val,test}.json",
          "poses_bounds.npy", "sparse/0/cameras")


def test_malformed_json(tmp_path):
    root = make_ngp(tmp_path)
    (root / "transforms.json").write_text('{"fl_x": 5.0\n "frames": []}')
    with pytest.raises(DataError) as e:
        load_dataset(root)
    check(e, root / "transforms.json", "malformed JSON", "line 2")


def test_json_not_an_object(tmp_path):
    root = make_ngp(tmp_path)
    (root / "transforms.json").write_text("[1, 2]")
    with pytest.raises(DataError) as e:
        load_dataset(root)
    check(e, root / "transforms.json", "JSON object")


def test_missing_image(tmp_path):
    root = make_ngp(tmp_path)
    (root / "images" / "1.png").unlink()
    with pytest.raises(DataError) as e:
        load_dataset(root)
    check(e, root / "images" / "1.png", "not found")


def test_unreadable_image(tmp_path):
    root = make_ngp(tmp_path)
    (root / "images" / "2.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError) as e:
        load_dataset(root)
    check(e, root / "images" / "2.png", "unreadable image")


def test_image_size_differs_from_others(tmp_path):
    root = make_ngp(tmp_path, w=None, h=None)
    iio.imwrite(root / "images" / "1.png", np.zeros((5, 6, 3), np.uint8))
    with pytest.raises(DataError) as e:
        load_dataset(root)
    check(e, root / "images" / "1.png", "6x5", "6x4")


def test_image_size_differs_from_json(tmp_path):
    root = make_ngp(tmp_path, w=8, h=4)
    with pytest.raises(DataError) as e:
        load_dataset(root)
    check(e, root / "images" / "0.png", "6x4", "8x4")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_pose(tmp_path, bad):
    root = make_ngp(tmp_path)
    data = frames_of(root)
    data["frames"][1]["transform_matrix"][0][3] = bad
    # json.dumps writes NaN/Infinity, which Python's json (and instant-ngp's) accept.
    rewrite(root, data)
    with pytest.raises(DataError) as e:
        load_dataset(root)
    check(e, root / "transforms.json", "frame 1", "not finite")


def test_bad_matrix_shape(tmp_path):
    root = make_ngp(tmp_path)
    data = frames_of(root)
    data["frames"][0]["transform_matrix"] = [[1, 0], [0, 1]]
    rewrite(root, data)
    with pytest.raises(DataError) as e:
        load_dataset(root)
    check(e, root / "transforms.json", "frame 0", "4x4")


def test_empty_split_from_holdout(tmp_path):
    root = make_ngp(tmp_path, n=3)
    with pytest.raises(DataError) as e:
        load_dataset(root, "train", holdout=1)
    check(e, root / "transforms.json", "split 'train' is empty")


def test_no_frames(tmp_path):
    root = make_ngp(tmp_path)
    rewrite(root, {"fl_x": 5.0, "frames": []})
    with pytest.raises(DataError) as e:
        load_dataset(root)
    check(e, root / "transforms.json", "no frames")


@pytest.mark.parametrize("key,words", [("frames", ["missing key 'frames'"]),
                                       ("transform_matrix", ["frame 0", "'transform_matrix'"]),
                                       ("file_path", ["frame 0", "'file_path'"]),
                                       ("fl_x", ["no focal length"])])
def test_missing_keys(tmp_path, key, words):
    root = make_ngp(tmp_path)
    data = frames_of(root)
    if key == "frames" or key == "fl_x":
        del data[key]
    else:
        for f in data["frames"]:
            del f[key]
    rewrite(root, data)
    with pytest.raises(DataError) as e:
        load_dataset(root)
    check(e, root / "transforms.json", *words)


def test_bad_number_type(tmp_path):
    root = make_ngp(tmp_path, fl_x="five")
    with pytest.raises(DataError) as e:
        load_dataset(root)
    check(e, root / "transforms.json", "'fl_x' must be a finite number")


def test_unknown_split_and_bad_downscale(tmp_path):
    root = make_ngp(tmp_path)
    with pytest.raises(DataError) as e:
        load_dataset(root, "training")
    check(e, root / "transforms.json", "unknown split 'training'")
    with pytest.raises(DataError) as e:
        load_dataset(root, downscale=0)
    check(e, root, "downscale")


def test_colmap_missing_images_file(tmp_path):
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    (tmp_path / "sparse" / "0" / "cameras.txt").write_text("1 PINHOLE 4 4 1 1 2 2\n")
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path)
    check(e, tmp_path / "sparse" / "0" / "images.txt", "not found")


def test_colmap_malformed_text(tmp_path):
    (tmp_path / "sparse" / "0").mkdir(parents=True)
    (tmp_path / "sparse" / "0" / "cameras.txt").write_text("# c\n1 PINHOLE 4 four 1 1 2 2\n")
    (tmp_path / "sparse" / "0" / "images.txt").write_text("")
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path)
    check(e, tmp_path / "sparse" / "0" / "cameras.txt", "line 2")


def test_llff_missing_image_folder(tmp_path):
    np.save(tmp_path / "poses_bounds.npy", np.ones((2, 17)))
    with pytest.raises(DataError) as e:
        load_dataset(tmp_path)
    check(e, tmp_path / "images", "not found")
