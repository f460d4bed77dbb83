import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segnet.data import (
    CAMVID_META,
    DataError,
    ResidentLoader,
    SyntheticRoadScenes,
    build_dataset,
    compute_class_weights,
    decode_split,
    median_frequency_weights,
    pack_dataset,
    read_pack,
)
from segnet.data.balancing import class_pixel_counts
from segnet.data.check import check_dataset
from segnet.data.synthetic import SYNTHETIC_META


def save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_camvid(root: Path, counts=(3, 2, 2), size=(12, 16)) -> Path:
    """A tiny CamVid in the SegNet release layout, list files with /SegNet/CamVid/ paths."""
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "val", "test"), counts):
        lines = []
        for i in range(count):
            name = f"0001TP_{i:06d}.png"
            save(root / split / name, rng.integers(0, 255, (*size, 3), dtype=np.uint8))
            save(root / f"{split}annot" / name, rng.integers(0, 12, size, dtype=np.uint8))
            lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


def test_camvid_layout_resolves_list_file_paths(tmp_path):
    root = make_camvid(tmp_path / "CamVid")
    ds = build_dataset("camvid", root, "train")
    assert len(ds) == 3 and ds.meta is CAMVID_META
    image, label = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 12, 16)
    assert label.dtype == torch.int64 and label.shape == (12, 16)
    assert int(label.max()) <= 11
    assert ds.pairs[0][0] == root / "train" / "0001TP_000000.png"


def test_real_camvid_split_sizes_and_classes(camvid_root):
    sizes = {split: len(build_dataset("camvid", camvid_root, split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 367, "val": 101, "test": 233}
    image, label = build_dataset("camvid", camvid_root, "test")[0]
    assert image.shape == (3, 360, 480) and label.shape == (360, 480)
    assert set(label.unique().tolist()) <= set(range(12))
    assert CAMVID_META.num_classes == 11 and CAMVID_META.class_names[10] == "Bicyclist"
    # the palette matches the one shipped with the release
    palette = np.array(Image.open(camvid_root / "camvid11_palette.png").convert("RGB"))[0, :11]
    assert [tuple(c) for c in palette.tolist()] == list(CAMVID_META.palette)


def test_real_camvid_check_reports_no_problems(camvid_root):
    reports = check_dataset(lambda split: build_dataset("camvid", camvid_root, split), ["val"], progress=False)
    assert reports[0].samples == 101 and reports[0].problems == []
    assert sum(reports[0].class_pixels) + reports[0].ignored_pixels == 101 * 360 * 480


def test_check_reports_each_problem_with_its_file(tmp_path):
    root = make_camvid(tmp_path / "CamVid", counts=(5, 1, 1))
    train = sorted((root / "train").iterdir())
    train[0].unlink()  # missing image
    (root / "trainannot" / train[1].name).write_bytes(b"not a png")  # unreadable label
    save(root / "trainannot" / train[2].name, np.zeros((5, 5), np.uint8))  # size mismatch
    save(root / "trainannot" / train[3].name, np.full((12, 16), 40, np.uint8))  # bad values
    save(root / "train" / train[4].name, np.zeros((12, 16), np.uint8))  # grayscale: converted, a note
    (root / "test.txt").write_text("")  # empty split
    reports = {r.split: r for r in check_dataset(lambda s: build_dataset("camvid", root, s), ["train", "test"], False)}
    problems = "\n".join(reports["train"].problems)
    assert len(reports["train"].problems) == 4
    assert f"{train[0]}: file is missing" in problems
    assert f"{root / 'trainannot' / train[1].name}: cannot be read" in problems
    assert "must match" in problems and "label values [40]" in problems
    assert any("grayscale" in n and train[4].name in n for n in reports["train"].notes)
    assert reports["test"].problems == ["test: the split is empty"]
    with pytest.raises(DataError, match="file is missing"):
        build_dataset("camvid", root, "train")[0]


def test_check_lists_unlabelled_images_and_every_other_problem_at_once(tmp_path, capsys):
    from segnet.cli import main

    root = tmp_path / "mine"
    root.mkdir()
    (root / "classes.yaml").write_text("classes: [road, car]\n")
    for name in "abcde":
        save(root / "images" / f"{name}.png", np.zeros((8, 9, 3), np.uint8))
        save(root / "masks" / f"{name}.png", np.zeros((8, 9), np.uint8))
    (root / "masks" / "a.png").unlink()  # an image without a label
    (root / "masks" / "b.png").write_text("not a png")  # three broken files beside it
    (root / "images" / "c.png").write_bytes((root / "images" / "c.png").read_bytes()[:40])
    save(root / "masks" / "d.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(DataError, match="a.png: no label"):  # building for training still refuses at once
        build_dataset("folder", root, "train")
    assert main(["data", "check", "--dataset", "folder", "--root", str(root), "--splits", "train"]) == 1
    out = capsys.readouterr().out
    assert "train: 4 samples, 4 problems" in out
    assert all(f"{name}.png" in out for name in "abcd") and out.count("PROBLEM") == 4


def test_sunrgbd_numbered_and_folder_layouts(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "sun"
    for n in (1, 2, 5051, 5052, 5053):
        save(root / "images" / f"img-{n:06d}.jpg", rng.integers(0, 255, (10, 12, 3), dtype=np.uint8))
        save(root / "labels" / f"img-{n:06d}.png", rng.integers(0, 38, (10, 12), dtype=np.uint8))
    train, test = build_dataset("sunrgbd", root, "train"), build_dataset("sunrgbd", root, "test")
    assert len(train) == 3 and len(test) == 2
    stored = np.array(Image.open(root / "labels" / "img-005051.png")).astype(np.int64)
    _, label = train[0]
    assert torch.equal(label, torch.from_numpy(np.where(stored == 0, 255, stored - 1)))
    assert train.meta.num_classes == 37 and train.meta.ignore_index == 255 and train.meta.class_names[0] == "wall"

    plain = tmp_path / "sun2"
    save(plain / "test" / "images" / "a.png", rng.integers(0, 255, (10, 12, 3), dtype=np.uint8))
    save(plain / "test" / "labels" / "a.png", np.full((10, 12), 37, np.uint8))
    assert int(build_dataset("sunrgbd", plain, "test")[0][1].max()) == 36


def test_folder_dataset_index_and_colour_masks(tmp_path):
    root = tmp_path / "mine"
    (root).mkdir()
    (root / "classes.yaml").write_text("classes: [road, car]\ncolors: [[128, 64, 128], [64, 0, 128]]\nignore_index: 255\n")
    save(root / "images" / "x.png", np.zeros((8, 9, 3), np.uint8))
    save(root / "masks" / "x.png", np.array([[0, 1, 255] * 3] * 8, np.uint8))
    assert build_dataset("folder", root)[0][1][0, :3].tolist() == [0, 1, 255]

    (root / "classes.yaml").write_text("classes: [road, car]\ncolors: [[128, 64, 128], [64, 0, 128]]\nmask_format: color\n")
    colour = np.zeros((8, 9, 3), np.uint8)
    colour[:, :3] = (128, 64, 128)
    colour[:, 3:6] = (64, 0, 128)
    save(root / "masks" / "x.png", colour)
    assert build_dataset("folder", root)[0][1][0].tolist() == [0] * 3 + [1] * 3 + [255] * 3
    colour[0, 0] = (1, 2, 3)
    save(root / "masks" / "x.png", colour)
    with pytest.raises(DataError, match=r"colours not in the class table: \(1, 2, 3\)"):
        build_dataset("folder", root)[0]
    (root / "classes.yaml").unlink()
    with pytest.raises(DataError, match="no classes.yaml"):
        build_dataset("folder", root)


def test_synthetic_is_deterministic_and_has_every_class():
    a, b = SyntheticRoadScenes("train", count=8), SyntheticRoadScenes("train", count=8)
    for i in range(8):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][1], b[i][1])
    assert not torch.equal(a[0][0], SyntheticRoadScenes("test", count=1)[0][0])
    labels = torch.stack([a[i][1] for i in range(8)])
    present = set(labels.unique().tolist())
    assert set(range(SYNTHETIC_META.num_classes)) <= present and 255 in present
    # classes are not separable by colour alone: sky and road share grey levels somewhere
    assert build_dataset("synthetic", split="val").meta.name == "synthetic"


def test_median_frequency_balancing_by_hand():
    ignore = 9
    # image 1 (4 px): class 0 x3, class 1 x1.  image 2 (4 px): class 0 x1, class 2 x2, void x1
    labels = [torch.tensor([[0, 0], [0, 1]]), torch.tensor([[0, 2], [2, ignore]])]
    class_pixels, image_pixels = class_pixel_counts(labels, 3, ignore)
    assert class_pixels.tolist() == [4, 1, 2] and image_pixels.tolist() == [8, 4, 4]
    freq, weights = median_frequency_weights(class_pixels, image_pixels)
    # freq = [4/8, 1/4, 2/4] = [0.5, 0.25, 0.5]; median 0.5; weights = [1, 2, 1]
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.25, 0.5], dtype=torch.float64))
    torch.testing.assert_close(weights, torch.tensor([1.0, 2.0, 1.0], dtype=torch.float64))
    # an absent class gets weight 0 and does not enter the median
    freq, weights = median_frequency_weights(torch.tensor([4.0, 0, 1]), torch.tensor([8.0, 0, 4]))
    assert weights[1] == 0 and torch.isclose(freq[[0, 2]].median(), torch.tensor(0.25, dtype=freq.dtype))


def test_class_weights_cache(tmp_path):
    ds = SyntheticRoadScenes("train", count=4)
    cache = tmp_path / "weights.json"
    first = compute_class_weights(ds, cache=cache, progress=False)
    assert json.loads(cache.read_text())["weights"] == first["weights"]
    assert all(w > 0 for w in first["weights"])
    assert compute_class_weights(ds, "natural", progress=False)["weights"] == [1.0] * 6
    # the softened mode: the square roots of the median-frequency weights, cached separately
    softened = compute_class_weights(ds, "median_frequency_sqrt", cache=cache, progress=False)
    assert softened["mode"] == "median_frequency_sqrt"
    torch.testing.assert_close(torch.tensor(softened["weights"]) ** 2, torch.tensor(first["weights"]))
    assert max(softened["weights"]) < max(first["weights"])  # the rarest class pulls less
    with pytest.raises(ValueError, match="use one of median_frequency, median_frequency_sqrt, natural"):
        compute_class_weights(ds, "inverse", progress=False)


def test_pack_round_trip(tmp_path):
    splits = {s: SyntheticRoadScenes(s, count=3) for s in ("train", "test")}
    path = pack_dataset(splits, tmp_path / "syn.pack", lossless=True)
    payload = read_pack(path)
    images, labels = decode_split(payload, "train")
    for i in range(3):
        image, label = splits["train"].load(i)
        assert torch.equal(images[i], image) and torch.equal(labels[i].long(), label)
    packed = build_dataset("anything", path, "test")
    assert packed.meta.class_names == SYNTHETIC_META.class_names and len(packed) == 3
    # lossy images: labels still exact, images close
    path = pack_dataset(splits, tmp_path / "lossy.pack")
    images, labels = decode_split(read_pack(path), "train")
    image, label = splits["train"].load(0)
    assert torch.equal(labels[0].long(), label)
    # 4:2:0 JPEG on small synthetic scenes with sharp colour edges and per-pixel noise: about
    # 7/255 (CamVid photos: 1.6/255); a broken decode would be near 85
    assert (images[0].float() - image.float()).abs().mean() < 10
    assert not (tmp_path / "lossy.pack.tmp").exists()
    (tmp_path / "bad.pack").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable segnet pack"):
        read_pack(tmp_path / "bad.pack")


def test_resident_loader_covers_split_and_shards():
    ds = SyntheticRoadScenes("train", count=10, size=(32, 40))
    images = torch.stack([ds.load(i)[0] for i in range(10)])
    labels = torch.stack([ds.load(i)[1] for i in range(10)]).to(torch.uint8)
    loader = ResidentLoader(images, labels, 4, (0.0,) * 3, (1.0,) * 3, 255, shuffle=True, seed=1)
    batches = list(loader)
    assert [len(b[0]) for b in batches] == [4, 4, 2] and len(loader) == 3
    seen = torch.cat([b[0] for b in batches])
    # every image exactly once: compare sorted per-image sums
    assert torch.allclose(seen.sum((1, 2, 3)).sort().values, (images.float() / 255).sum((1, 2, 3)).sort().values)
    loader.set_epoch(1)
    assert not torch.equal(torch.cat([b[0] for b in loader]), seen)  # reshuffled every epoch
    # two ranks with batch 2 see, step by step, the two halves of one process's batch of 4,
    # with the same flips and zoom
    options = dict(hflip=True, scale=(0.8, 1.2), seed=1, drop_last=True)
    single = list(ResidentLoader(images, labels, 4, (0.0,) * 3, (1.0,) * 3, 255, **options))
    ranks = [list(ResidentLoader(images, labels, 2, (0.0,) * 3, (1.0,) * 3, 255, rank=r, world_size=2, **options))
             for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 2
    for whole, first, second in zip(single, *ranks):
        assert torch.equal(whole[0], torch.cat([first[0], second[0]]))
        assert torch.equal(whole[1], torch.cat([first[1], second[1]]))
    aug = ResidentLoader(images, labels, 5, (0.0,) * 3, (1.0,) * 3, 255, hflip=True, scale=(0.5, 1.5), seed=2)
    for _, lab in aug:
        assert set(lab.unique().tolist()) <= set(labels.unique().tolist()) | {255}


def test_resident_loader_colour_jitter_changes_pixels_only_and_shards_like_one_process():
    from segnet.data.resident import _color_jitter

    ds = SyntheticRoadScenes("train", count=8, size=(40, 48))
    images = torch.stack([ds.load(i)[0] for i in range(8)])
    labels = torch.stack([ds.load(i)[1] for i in range(8)]).to(torch.uint8)
    raw = (0.0,) * 3, (1 / 255,) * 3  # the loader then hands back 0-255 pixel values
    options = dict(hflip=True, scale=(0.8, 1.2), seed=4, drop_last=True)
    plain = list(ResidentLoader(images, labels, 4, *raw, 255, **options))
    jittered = list(ResidentLoader(images, labels, 4, *raw, 255, color_jitter=0.4, **options))
    for (plain_images, plain_labels), (images_j, labels_j) in zip(plain, jittered):
        assert not torch.equal(plain_labels, labels_j) or not torch.allclose(plain_images, images_j)
        assert images_j.min() >= 0 and images_j.max() <= 255 + 1e-3
    ranks = [list(ResidentLoader(images, labels, 2, *raw, 255, rank=r, world_size=2, color_jitter=0.4, **options))
             for r in (0, 1)]
    for whole, first, second in zip(jittered, *ranks):
        assert torch.equal(whole[0], torch.cat([first[0], second[0]]))
    # the three factors, one at a time, on a known image
    pixels = torch.tensor([[[[100.0]], [[50.0]], [[0.0]]]]).expand(1, 3, 2, 2).clone()
    assert torch.allclose(_color_jitter(pixels, torch.tensor([[2.0, 1.0, 1.0]])), (pixels * 2).clamp(0, 255))
    assert torch.allclose(_color_jitter(pixels, torch.tensor([[1.0, 0.0, 1.0]])),
                          torch.full_like(pixels, 0.299 * 100 + 0.587 * 50))  # no contrast: the mean grey
    grey = _color_jitter(pixels, torch.tensor([[1.0, 1.0, 0.0]]))
    assert torch.allclose(grey[:, 0], grey[:, 2])  # no saturation: every channel the same
    assert torch.equal(_color_jitter(pixels, torch.ones(1, 3)), pixels)
    with pytest.raises(ValueError, match="color_jitter"):
        ResidentLoader(images, labels, 4, *raw, 255, color_jitter=1.5)


def test_resident_loader_crops_are_per_sample_aligned_and_shard_like_one_process():
    # each pixel encodes its own coordinates, so a crop can be located exactly in its image
    n, height, width = 8, 20, 30
    rows = torch.arange(height).view(1, height, 1).expand(n, height, width)
    cols = torch.arange(width).view(1, 1, width).expand(n, height, width)
    images = torch.stack([rows, cols, torch.arange(n).view(n, 1, 1).expand(n, height, width)], 1).to(torch.uint8)
    labels = ((rows * width + cols) % 250).to(torch.uint8)
    options = dict(hflip=True, crop=(8, 12), seed=3, drop_last=True)
    single = list(ResidentLoader(images, labels, 4, (0.0,) * 3, (1 / 255,) * 3, 255, **options))
    offsets, flips = set(), set()
    for batch_images, batch_labels in single:
        assert batch_images.shape == (4, 3, 8, 12) and batch_labels.shape == (4, 8, 12)
        for image, label in zip(batch_images.round().long(), batch_labels):
            top, left = int(image[0, 0, 0]), int(image[1, 0, 0])
            flipped = bool(image[1, 0, 1] < image[1, 0, 0])
            offsets.add((top, left))
            flips.add(flipped)
            assert 0 <= top <= height - 8
            # the label is cut from the same window of the same (possibly flipped) image
            assert torch.equal(label, ((image[0] * width + image[1]) % 250))
            assert (image[1, 0, 1] - image[1, 0, 0]).abs() == 1  # a contiguous window
    assert len(offsets) > 4 and flips == {True, False}  # drawn per sample, not once per batch
    ranks = [list(ResidentLoader(images, labels, 2, (0.0,) * 3, (1 / 255,) * 3, 255, rank=r, world_size=2, **options))
             for r in (0, 1)]
    for whole, first, second in zip(single, *ranks):
        assert torch.equal(whole[0], torch.cat([first[0], second[0]]))
        assert torch.equal(whole[1], torch.cat([first[1], second[1]]))
    again = list(ResidentLoader(images, labels, 4, (0.0,) * 3, (1 / 255,) * 3, 255, **options))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(single, again))  # reproducible
    with pytest.raises(ValueError, match="must fit"):
        ResidentLoader(images, labels, 4, (0.0,) * 3, (1.0,) * 3, 255, crop=(21, 12))
