"""Video: segment a short video made here, frame by frame, into an overlay video and label maps."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segnet.cli import main
from segnet.data import SYNTHETIC_META, SyntheticRoadScenes
from segnet.engine import save_checkpoint
from segnet.engine.video import TemporalSmoothing, is_video
from segnet.models import create_model

av = pytest.importorskip("av")
RAW = {"mean": (0.0, 0.0, 0.0), "std": (1 / 255, 1 / 255, 1 / 255)}


def make_video(path: Path, frames: int = 12, size=(48, 65), fps: int = 10, audio: bool = True) -> None:
    """Synthetic road scenes as an H.264 MP4 with a second of AAC silence beside them."""
    scenes = SyntheticRoadScenes("test", count=frames, size=size)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = size[1] // 2 * 2, size[0] // 2 * 2, "yuv420p"
        sound = container.add_stream("aac", rate=16000) if audio else None
        for index in range(frames):
            image = scenes.load(index)[0].permute(1, 2, 0).numpy()[: video.height, : video.width]
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None:
            samples = np.zeros((1, 16000), np.float32)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in sound.encode(frame):
                container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return save_checkpoint(tmp_path / "m.pt", create_model("segnet_basic", SYNTHETIC_META.num_classes), "segnet_basic",
                           SYNTHETIC_META, RAW)


def test_predict_a_video_writes_an_overlay_video_and_label_maps(tmp_path, checkpoint, capsys):
    clip = tmp_path / "drive.mp4"
    make_video(clip)
    assert is_video(clip) and not is_video(tmp_path / "x.png")
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(checkpoint), str(clip), "--out", str(out), "--video-labels",
                 "--batch-size", "5"]) == 0  # 12 frames in batches of 5, 5 and 2
    assert "1 video(s) segmented, 0 failed" in capsys.readouterr().out
    with av.open(str(out / "drive_overlay.mp4")) as result:
        stream = result.streams.video[0]
        decoded = [frame.to_ndarray(format="rgb24") for frame in result.decode(stream)]
        assert stream.average_rate == Fraction(10) and (stream.width, stream.height) == (64, 48)
        assert [s.codec_context.name for s in result.streams.audio] == ["aac"]  # the sound came across
    assert len(decoded) == 12
    labels = sorted((out / "drive_labels").iterdir())
    assert [p.name for p in labels] == [f"{i:06d}.png" for i in range(1, 13)]
    first = np.array(Image.open(labels[0]))
    assert first.shape == (48, 64) and first.max() < SYNTHETIC_META.num_classes
    # the overlay blends the label colours over the frame: not the frame itself
    scenes = SyntheticRoadScenes("test", count=1, size=(48, 65))
    original = scenes.load(0)[0].permute(1, 2, 0).numpy()[:48, :64].astype(float)
    assert np.abs(decoded[0].astype(float) - original).mean() > 5


def test_a_broken_video_is_named_and_skipped(tmp_path, checkpoint, capsys):
    (tmp_path / "broken.mp4").write_text("not a video\n")
    make_video(tmp_path / "good.mp4", frames=3, audio=False)
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(checkpoint), str(tmp_path / "broken.mp4"), str(tmp_path / "good.mp4"),
                 "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "broken.mp4: not a readable video" in captured.err and "1 video(s) segmented, 1 failed" in captured.out
    assert sorted(p.name for p in out.iterdir()) == [".segnet-outputs.json", "good_overlay.mp4"]  # nothing half-written


def test_temporal_smoothing_is_an_average_of_probabilities_over_frames():
    logits = torch.zeros(3, 2, 1, 1)
    logits[0, 0] = 4.0  # frame 0: class 0, confidently
    logits[1, 1] = 1.0  # frames 1-2: class 1, weakly
    logits[2, 1] = 1.0
    assert TemporalSmoothing(0.0)(logits).flatten().tolist() == [0, 1, 1]
    smoothed = TemporalSmoothing(0.8)(logits).flatten().tolist()
    assert smoothed == [0, 0, 0]  # the confident first frame carries on
    smoothing = TemporalSmoothing(0.3)
    assert smoothing(logits[:2]).flatten().tolist() == [0, 1]
    assert smoothing(logits[2:]).flatten().tolist() == [1]  # state carried across batches
    with pytest.raises(ValueError, match="--smooth"):
        TemporalSmoothing(1.0)


def test_label_maps_are_complete_or_absent(tmp_path, checkpoint, capsys, monkeypatch):
    from segnet.engine import video

    clip = tmp_path / "drive.mp4"
    make_video(clip, frames=6, audio=False)
    out = tmp_path / "out"
    argv = ["predict", "--checkpoint", str(checkpoint), str(clip), "--out", str(out), "--video-labels",
            "--batch-size", "2"]
    # Ctrl-C after the first batch: no partial labels folder, no staging folder, no overlay
    real_write, calls = video._OverlayWriter.write, []

    def interrupted(self, pending):
        calls.append(len(pending))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_write(self, pending)

    monkeypatch.setattr(video._OverlayWriter, "write", interrupted)
    assert main(argv) == 130
    assert not out.exists() or [p.name for p in out.iterdir()] == []
    monkeypatch.undo()
    # a killed run's staging folder (its process gone) is removed by the next predict
    out.mkdir(exist_ok=True)
    (out / ".drive_labels.tmp999999").mkdir()
    (out / ".drive_labels.tmp999999" / "000001.png").write_bytes(b"half")
    assert main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == [".segnet-outputs.json", "drive_labels", "drive_overlay.mp4"]
    assert len(list((out / "drive_labels").iterdir())) == 6
    assert main(argv) == 0  # a rerun replaces its own folder whole
    (out / "drive_labels" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert main(argv) == 2  # a folder holding a user's file is not replaced
    assert "drive_labels: exists and holds files segnet did not write" in capsys.readouterr().err
    assert (out / "drive_labels" / "notes.txt").read_text() == "mine"
