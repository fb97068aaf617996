"""A CLI run leaves the kernels it compiled in Taichi's offline cache, so the next run starts
without compiling them again (Taichi writes the cache when its program is finalised)."""
import os
import subprocess
import sys


def _train(scene_dir, out, cache):
    env = dict(os.environ, TI_OFFLINE_CACHE_FILE_PATH=str(cache))
    code = "import sys; from taichi_nerf.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, "train", str(scene_dir), "--steps", "1", "--log2-table",
         "12", "--occ-resolution", "32", "--out", str(out), "--arch", "cpu", "--quiet"],
        env=env, capture_output=True, text=True, timeout=600)


def _cached(cache):
    return sorted(p.name for p in cache.rglob("*") if p.is_file())


def test_a_cli_training_run_writes_the_offline_cache(scene_dir, tmp_path):
    cache = tmp_path / "ticache"
    first = _train(scene_dir, tmp_path / "run1", cache)
    assert first.returncode == 0, first.stderr[-2000:]
    files = _cached(cache)
    kernels = [f for f in files if f.endswith(".tic")]
    assert len(kernels) >= 5, files  # rays, march, encode, composite, occupancy, ...
    second = _train(scene_dir, tmp_path / "run2", cache)
    assert second.returncode == 0, second.stderr[-2000:]
    # the second run found every kernel it needed: nothing new was compiled and written
    assert [f for f in _cached(cache) if f.endswith(".tic")] == kernels
