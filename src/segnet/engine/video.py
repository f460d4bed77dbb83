"""Segment a video: frames stream through the model in batches and come out as an overlay
video (and, when asked, one label map per frame), so memory stays flat however long it is.

Decoding and encoding use PyAV (FFmpeg). The overlay is H.264 in an MP4 at the input's
frame rate; the audio stream is copied across when MP4 can hold its codec and dropped,
with the reason, when it cannot.
"""

from __future__ import annotations

import os
import shutil
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from ..data import DataError
from ..files import atomic_path
from ..progress import bar_disabled
from ..report import overlay, palette_png
from .inference import LoadedModel

VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg"}
# audio codecs an MP4 file can carry as they are (anything else is dropped, and the result says so)
MP4_AUDIO_CODECS = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"}


def is_video(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a video file (by its suffix)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


class TemporalSmoothing:
    """Exponential moving average of class probabilities over consecutive frames:
    ``p'_t = alpha * p'_(t-1) + (1 - alpha) * p_t``; ``alpha`` 0 is no smoothing."""

    def __init__(self, alpha: float) -> None:
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"--smooth must be in [0, 1), not {alpha}")
        self.alpha, self.state = alpha, None

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """``(N, K, H, W)`` logits of consecutive frames -> their labels ``(N, H, W)``."""
        if self.alpha == 0.0:
            return logits.argmax(1)
        labels = []
        for probabilities in logits.softmax(1):
            if self.state is None or self.state.shape != probabilities.shape:
                self.state = probabilities
            else:
                self.state = self.alpha * self.state + (1 - self.alpha) * probabilities
            labels.append(self.state.argmax(0))
        return torch.stack(labels)

    def reset(self) -> None:
        self.state = None


def segment_video(loaded: LoadedModel, path: str | os.PathLike, out_dir: str | os.PathLike, stem: str,
                  batch_size: int = 4, amp: str = "auto", write_labels: bool = False, smooth: float = 0.0,
                  progress: bool = True) -> dict:
    """Segment every frame of the video at ``path`` with ``loaded``; write
    ``out_dir/STEM_overlay.mp4`` and, with ``write_labels``,
    ``out_dir/STEM_labels/NNNNNN.png`` (class ids with the palette).

    Returns ``{"overlay", "labels", "frames", "seconds", "frames_per_s", "fps", "audio"}``;
    ``audio`` says whether the sound was copied, absent or dropped (and why). A video that
    cannot be read raises ``DataError`` naming the file; the overlay video and the labels
    folder are written atomically, so a failure or an interrupt never leaves a half-written one.
    """
    import av

    path, out = Path(path), Path(out_dir)
    try:
        source = av.open(str(path))
    except (av.FFmpegError, OSError) as error:
        raise DataError(f"{path}: not a readable video ({error}); give an MP4, MOV, AVI, MKV or WebM file") from None
    target = out / f"{stem}_overlay.mp4"
    labels_dir = out / f"{stem}_labels" if write_labels else None
    # label maps go to a hidden folder first and replace STEM_labels only when every frame is in:
    # a failure or Ctrl-C leaves no partial folder, and a killed run's one is removed on the next start
    staging = out / f".{stem}_labels.tmp{os.getpid()}" if write_labels else None
    try:
        with source:
            writer, rate, audio_note, start = _segment_frames(loaded, source, path, out, target, staging, batch_size,
                                                              amp, smooth, progress)
        if staging is not None:
            if labels_dir.is_dir():
                shutil.rmtree(labels_dir)  # this video's own earlier maps (predict checked whose they are)
            os.replace(staging, labels_dir)
    finally:
        if staging is not None and staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    seconds = time.perf_counter() - start
    return {"overlay": target, "labels": labels_dir, "frames": writer.frames, "seconds": seconds,
            "frames_per_s": writer.frames / seconds if seconds else 0.0, "fps": float(rate), "audio": audio_note}


def _segment_frames(loaded, source, path, out, target, labels_dir, batch_size, amp, smooth, progress):
    """segment_video's decode, segment and encode loop: ``(writer, rate, audio note, start time)``."""
    import av
    from tqdm import tqdm

    if not source.streams.video:
        raise DataError(f"{path}: has no video stream")
    video = source.streams.video[0]
    video.thread_type = "AUTO"
    rate = video.average_rate or video.guessed_rate or Fraction(25)
    out.mkdir(parents=True, exist_ok=True)
    if labels_dir is not None:
        labels_dir.mkdir()
    start = time.perf_counter()
    with atomic_path(target) as tmp, tqdm(total=video.frames or None, desc=f"segmenting {path.name}",
                                          unit="frame", disable=bar_disabled(progress)) as bar:
        sink = av.open(str(tmp), "w", format="mp4")
        try:
            writer = _OverlayWriter(loaded, sink, video, rate, labels_dir, amp, smooth)
            audio, audio_note = _mp4_audio(source, sink)
            streams = [video] + ([audio] if audio is not None else [])
            pending: list[np.ndarray] = []
            for packet in source.demux(*streams):
                if packet.stream.type == "audio":
                    if packet.dts is not None:
                        packet.stream = sink.streams.audio[0]
                        sink.mux(packet)
                    continue
                for frame in packet.decode():
                    pending.append(frame.to_ndarray(format="rgb24"))
                    if len(pending) == batch_size:
                        bar.update(writer.write(pending))
            bar.update(writer.write(pending))
            if writer.frames == 0:
                raise DataError(f"{path}: no frame could be decoded")
            writer.finish()
        except av.FFmpegError as error:
            raise DataError(f"{path}: the video could not be decoded to the end ({error})") from None
        finally:
            sink.close()
    return writer, rate, audio_note, start


def _mp4_audio(source, sink):
    """``(input audio stream to copy or None, what happens to the sound)``; adds the copy to ``sink``."""
    if not source.streams.audio:
        return None, "none in the input"
    audio = source.streams.audio[0]
    if audio.codec_context.name not in MP4_AUDIO_CODECS:
        return None, f"dropped ({audio.codec_context.name} audio cannot go into MP4 as it is)"
    sink.add_stream_from_template(audio)
    return audio, f"copied ({audio.codec_context.name})"


class _OverlayWriter:
    """Segments batches of frames and encodes their overlays as H.264 (and label maps as PNGs)."""

    def __init__(self, loaded: LoadedModel, sink, video, rate, labels_dir: Path | None, amp: str, smooth: float):
        self.loaded, self.sink, self.labels_dir, self.amp = loaded, sink, labels_dir, amp
        self.smoothing = TemporalSmoothing(smooth)
        self.encoder = sink.add_stream("libx264", rate=rate)
        self.encoder.pix_fmt, self.encoder.options = "yuv420p", {"crf": "20"}
        # H.264 in yuv420p needs even sides: an odd last row or column is left out
        self.encoder.width = video.codec_context.width // 2 * 2
        self.encoder.height = video.codec_context.height // 2 * 2
        self.frames = 0

    def write(self, pending: list[np.ndarray]) -> int:
        """Segment and encode the ``pending`` frames (the list is emptied); returns how many."""
        import av

        if not pending:
            return 0
        meta = self.loaded.meta
        batch = torch.from_numpy(np.stack(pending)).permute(0, 3, 1, 2)
        labels = self.smoothing(self.loaded.predict_logits(batch, self.amp))
        for picture, label in zip(pending, labels.cpu().numpy()):
            blended = np.asarray(overlay(picture, label, meta))
            blended = np.ascontiguousarray(blended[: self.encoder.height, : self.encoder.width])
            for packet in self.encoder.encode(av.VideoFrame.from_ndarray(blended, format="rgb24")):
                self.sink.mux(packet)
            self.frames += 1
            if self.labels_dir is not None:  # a staging folder: the whole folder is what is atomic
                palette_png(label, meta).save(self.labels_dir / f"{self.frames:06d}.png", format="PNG")
        count = len(pending)
        pending.clear()
        return count

    def finish(self) -> None:
        for packet in self.encoder.encode(None):
            self.sink.mux(packet)
