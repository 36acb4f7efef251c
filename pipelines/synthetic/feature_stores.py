"""Feature stores written directly (no media, no encoders) with a planted signal, at any size.

Used by the fast tests (a store in well under a second) and by bench/train.py (a store the size
of the real dataset). The streams carry the real aliases, rates and, by default, the real widths,
so a head reads them exactly as it reads extracted features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from features_store import StreamInfo, open_store

# Real widths of the Affective-TRM recipe: Dasheng-base, HSEmotion EfficientNet-B0, EmbeddingGemma.
CREMAD_DIMS = {"dasheng-base": 768, "hsemotion-enet-b0": 1280, "embeddinggemma": 768}


def cremad_like_store(path: str | Path, clips: int, *, frames: int = 63, actors: int = 91,
                      dims: dict[str, int] | None = None, audio_shift_s: float = 0.04,
                      video_shift_s: float = 0.04, noise: float = 0.5, seed: int = 0,
                      clips_per_part: int = 512, dtype: str = "float16") -> str:
    """A CREMA-D-shaped store: per-frame audio and video, one text row and one valence/arousal
    target per clip, actors split 80/10/10 as the adapter does.

    Every stream encodes the clip's valence/arousal linearly (a fixed random projection) plus
    Gaussian noise of std `noise`; clip lengths vary around `frames` (video rows).
    """
    from pipelines.datasets.cremad import actor_splits

    dims = {**CREMAD_DIMS, **(dims or {})}
    rng = np.random.default_rng(seed)
    store = open_store(str(path), mode="a", dataset="cremad")
    audio = store.create_stream(StreamInfo(name="dasheng-base", dim=dims["dasheng-base"],
                                           dtype=dtype, frame_shift_s=audio_shift_s))
    video = store.create_stream(StreamInfo(name="hsemotion-enet-b0",
                                           dim=dims["hsemotion-enet-b0"], dtype=dtype,
                                           frame_shift_s=video_shift_s))
    text = store.create_stream(StreamInfo(name="embeddinggemma", dim=dims["embeddinggemma"],
                                          dtype=dtype))
    labels = store.create_stream(StreamInfo(name="cremad-va", kind="label", dim=2))
    projections = {key: rng.normal(size=(2, dim)).astype(np.float32)
                   for key, dim in dims.items()}
    actor_ids = [str(1001 + a) for a in range(actors)]
    split_of = actor_splits(actor_ids)
    records = []
    for first in range(0, clips, clips_per_part):
        part = f"p{first // clips_per_part:05d}"
        with (store.part_writer(audio, part) as audio_w, store.part_writer(video, part) as video_w,
              store.part_writer(text, part) as text_w, store.part_writer(labels, part) as label_w):
            for k in range(first, min(clips, first + clips_per_part)):
                actor = actor_ids[k % actors]
                clip_id = f"{actor}_{k:05d}"
                va = rng.uniform(-0.8, 0.8, size=2).astype(np.float32)
                n_video = max(2, int(frames * rng.uniform(0.7, 1.3)))
                seconds = n_video * video_shift_s
                n_audio = max(2, int(round(seconds / audio_shift_s)))
                for writer, key, n in ((audio_w, "dasheng-base", n_audio),
                                       (video_w, "hsemotion-enet-b0", n_video),
                                       (text_w, "embeddinggemma", 1)):
                    rows = va @ projections[key] + noise * rng.standard_normal(
                        (n, dims[key]), dtype=np.float32)
                    writer.write_clip(clip_id, rows)
                label_w.write_clip(clip_id, va[None, :])
                records.append({"clip_id": clip_id, "split": split_of[actor], "speaker": actor,
                                "actor": actor, "dataset": "cremad", "duration": seconds})
    store.add_clips(records)
    store.finalize()
    return str(path)
