"""A small RAER copy: classroom frame folders, annotation lists and face/body box files.

Planted signal: the face box region is painted in the class's colour and the body region holds a
marker circling at a class-specific speed, so face crops carry the class by colour and body
crops by motion. Boxes move a little from frame to frame, as detected boxes do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..datasets.raer import CLASSES
from ..synthetic.av_writer import write_frame_folder
from .base import SampleInfo, SampleOptions, circle_path, hue_colour, render_frames, split_sizes

FRAMES_PER_SECOND = 8
DEFAULTS = {"clips": 20, "seconds": 2.0, "size": 64}


def generate(out: Path, options: SampleOptions) -> SampleInfo:
    rng = np.random.default_rng(options.seed)
    width = options.size + options.size // 2
    height = options.size
    n_frames = max(16, int(round(options.seconds * FRAMES_PER_SECOND)))
    sizes = split_sizes(max(options.clips, 3), (0.6, 0.2, 0.2))
    face_boxes: dict[str, dict[str, list[int]]] = {}
    body_boxes: dict[str, list[int]] = {}
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    index = 0
    for split, count in zip(lists, sizes):
        for _ in range(count):
            label = index % len(CLASSES)
            frame_dir = f"frames/room{index // 6 + 1}/clip{index:04d}"
            frames, faces, body = _render_clip(rng, label, n_frames, width, height)
            names = [f"{i + 1:05d}.jpg" for i in range(n_frames)]
            folder = out / frame_dir
            write_frame_folder(folder, frames, ext="jpg")
            for i, name in enumerate(names):  # zero-padded names, as the RAER release ships
                (folder / f"{i + 1}.jpg").rename(folder / name)
            face_boxes[frame_dir] = {name: box for name, box in zip(names, faces)}
            body_boxes[frame_dir] = body
            lists[split].append(f"{frame_dir} {n_frames} {label + 1}")
            index += 1
    (out / "annotation").mkdir(parents=True, exist_ok=True)
    for split, lines in lists.items():
        (out / "annotation" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    (out / "bounding_box").mkdir(parents=True, exist_ok=True)
    (out / "bounding_box" / "face.json").write_text(json.dumps(face_boxes))
    (out / "bounding_box" / "body.json").write_text(json.dumps(body_boxes))
    return SampleInfo(
        layout="raer", root=str(out), clips=index, seconds=options.seconds, seed=options.seed,
        size=options.size,
        signal="face region coloured by class; body region marker circles at a class speed",
        details={"clips_per_split": dict(zip(lists, sizes)), "frames_per_clip": n_frames})


def _render_clip(rng: np.random.Generator, label: int, n_frames: int, width: int, height: int
                 ) -> tuple[np.ndarray, list[list[int]], list[int]]:
    background = np.tile(np.array([0.35, 0.35, 0.38], np.float32), (n_frames, 1))
    frames = render_frames(background, (height, width))
    # Body region: the left two thirds; the marker's speed says the class.
    body = [1, 1, int(width * 2 / 3), height - 1]
    body_w, body_h = body[2] - body[0], body[3] - body[1]
    turns = 0.25 + 0.25 * label
    sub = render_frames(np.tile(np.array([0.2, 0.25, 0.3], np.float32), (n_frames, 1)),
                        (body_h, body_w), circle_path(n_frames, FRAMES_PER_SECOND, turns,
                                                      rng.uniform(0, 2 * np.pi)))
    frames[:, body[1]: body[3], body[0]: body[2]] = sub
    # Face: a square in the upper part of the body region, coloured by class, jittering.
    side = max(6, height // 3)
    colour = (hue_colour(label / len(CLASSES)) * 255).astype(np.uint8)
    x0, y0 = body[0] + body_w // 2 - side // 2, body[1] + 2
    faces = []
    for t in range(n_frames):
        dx, dy = (int(v) for v in rng.integers(-1, 2, size=2))
        left, top = max(0, x0 + dx), max(0, y0 + dy)
        frames[t, top: top + side, left: left + side] = colour
        faces.append([left, top, left + side, top + side])
    return frames, faces, body
