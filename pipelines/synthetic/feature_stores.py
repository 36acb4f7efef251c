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


def _clip_provenance(dim: int, reduced: bool = False) -> dict:
    """Stream provenance of a random-weight CLIP ViT-B/16 (as `--weights random` writes it), so a
    head that rebuilds the CLIP text tower from it builds the real one (`reduced`: the
    extractor's reduced build, for smoke runs)."""
    arch = {"model": "ViT-B-16", "reduced": reduced, "quick_gelu": True}
    if dim != 512:  # a narrower projection: the head's text tower is built to match it
        arch["embed_dim"] = dim
    return {"encoder": {"name": "clip-vit-b16", "dim": dim, "weights": "random:0", "arch": arch}}


def _labelled_class_streams(store, name: str, classes: list[str]):
    return store.create_stream(StreamInfo(name=name, kind="label", dim=1, dtype="int64",
                                          extra={"classes": list(classes)}))


def raer_like_store(path: str | Path, clips: int = 2700, *, frames: int = 48, dim: int = 512,
                    seed: int = 0, clips_per_part: int = 512, dtype: str = "float16",
                    reduced: bool = False, rapt: bool = True) -> str:
    """A RAER-shaped store: per-frame CLIP face and body embeddings (25 fps) and one class of
    five per clip; 70/10/20 train/val/test. Each class shifts the features along its own
    random direction, plus unit noise. `reduced` records the reduced CLIP build, whose text
    tower the head then builds (small and fast). `rapt`: the streams are named as the RAER
    recipe's (`clip-vit-b16@rapt@face`, the paper profile's), else `clip-vit-b16@face`."""
    from pipelines.datasets.raer import CLASSES

    rng = np.random.default_rng(seed)
    store = open_store(str(path), mode="a", dataset="raer")
    # the aliases of the RAER recipe (CLIP on RAPT-CLIP's input), which the head reads
    streams = {view: store.create_stream(StreamInfo(
        name="clip-vit-b16", alias=f"clip-vit-b16{'@rapt' if rapt else ''}@{view}", dim=dim,
        dtype=dtype,
        frame_shift_s=0.04, weights="random", preprocessing={
            **_clip_provenance(dim, reduced), "crop": view,
            "input": "rapt" if rapt else "open_clip"},
        extra={"random_weights": True, "modality": "video"})) for view in ("face", "body")}
    labels = _labelled_class_streams(store, "raer-class", CLASSES)
    directions = rng.normal(size=(len(CLASSES), dim)).astype(np.float32)
    records = []
    for first in range(0, clips, clips_per_part):
        part = f"p{first // clips_per_part:05d}"
        with (store.part_writer(streams["face"], part) as face_w,
              store.part_writer(streams["body"], part) as body_w,
              store.part_writer(labels, part) as label_w):
            for k in range(first, min(clips, first + clips_per_part)):
                clip_id = f"clip{k:05d}"
                label = int(rng.integers(len(CLASSES)))
                n = max(16, int(frames * rng.uniform(0.7, 1.3)))
                for writer in (face_w, body_w):
                    writer.write_clip(clip_id, directions[label] + rng.standard_normal(
                        (n, dim), dtype=np.float32))
                label_w.write_clip(clip_id, np.array([[label]]))
                split = "train" if k % 10 < 7 else "val" if k % 10 == 7 else "test"
                records.append({"clip_id": clip_id, "split": split, "dataset": "raer",
                                "duration": n * 0.04})
    store.add_clips(records)
    store.finalize()
    return str(path)


def iemocap_like_store(path: str | Path, utterances: int = 7400, *, seconds: float = 4.5,
                       audio_dim: int = 768, video_dim: int = 512, seed: int = 0,
                       clips_per_part: int = 512, dtype: str = "float16") -> str:
    """An IEMOCAP-shaped store: wav2vec2-base at 50 Hz and CLIP at the recipe's 2 fps per
    utterance (lengths vary around `seconds`), six classes and a valence/activation/dominance
    rating (1..5) per utterance, both following the class; sessions 1-4 train and 5 test."""
    from pipelines.datasets.iemocap import CLASSES

    rng = np.random.default_rng(seed)
    store = open_store(str(path), mode="a", dataset="iemocap")
    audio = store.create_stream(StreamInfo(name="wav2vec2-base", dim=audio_dim, dtype=dtype,
                                           frame_shift_s=0.02))
    video = store.create_stream(StreamInfo(
        name="clip-vit-b16", dim=video_dim, dtype=dtype, frame_shift_s=0.5, weights="random",
        preprocessing=_clip_provenance(video_dim), extra={"random_weights": True}))
    labels = _labelled_class_streams(store, "iemocap-emotion", CLASSES)
    vad = store.create_stream(StreamInfo(name="iemocap-vad", kind="label", dim=3,
                                         extra={"columns": ["valence", "activation",
                                                            "dominance"]}))
    # each class's mean rating on the evaluators' 1..5 scale (valence, activation, dominance)
    centres = rng.uniform(1.5, 4.5, size=(len(CLASSES), 3)).astype(np.float32)
    directions = {"a": rng.normal(size=(len(CLASSES), audio_dim)).astype(np.float32),
                  "v": rng.normal(size=(len(CLASSES), video_dim)).astype(np.float32)}
    records = []
    for first in range(0, utterances, clips_per_part):
        part = f"p{first // clips_per_part:05d}"
        with (store.part_writer(audio, part) as audio_w, store.part_writer(video, part) as video_w,
              store.part_writer(labels, part) as label_w, store.part_writer(vad, part) as vad_w):
            for k in range(first, min(utterances, first + clips_per_part)):
                session = 1 + k % 5
                clip_id = f"Ses{session:02d}_utt{k:05d}"
                label = int(rng.integers(len(CLASSES)))
                duration = seconds * rng.uniform(0.4, 1.6)
                n_audio, n_video = max(2, int(duration / 0.02)), max(1, int(duration / 0.5))
                audio_w.write_clip(clip_id, directions["a"][label] + rng.standard_normal(
                    (n_audio, audio_dim), dtype=np.float32))
                video_w.write_clip(clip_id, directions["v"][label] + rng.standard_normal(
                    (n_video, video_dim), dtype=np.float32))
                label_w.write_clip(clip_id, np.array([[label]]))
                vad_w.write_clip(clip_id, (centres[label] + 0.3 * rng.standard_normal(3))[None])
                records.append({"clip_id": clip_id, "split": "test" if session == 5 else "train",
                                "speaker": f"Ses{session:02d}", "dataset": "iemocap",
                                "duration": duration})
    store.add_clips(records)
    store.finalize()
    return str(path)
