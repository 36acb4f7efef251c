"""Media decoding for extraction: one import point for probing, video frames and audio.

- `probe(path)` -> `MediaInfo`: what the container declares.
- `iter_video_frames(source, fps, size, ...)` -> `FrameBatch` stream, resampled by timestamp
  (rule in `extract.media_video`), from a video file or a frame folder.
- `iter_audio(source, sample_rate, ...)` / `load_audio(...)`: mono float32 at a given rate;
  `iter_timed_audio` also gives the media time each chunk starts at.
- `MediaError(UserError)` with ``stage`` for every way a source can fail.
"""

from extract.media_audio import iter_audio, iter_timed_audio, load_audio
from extract.media_base import (
    DEFAULT_FOLDER_FPS,
    FRAME_SUFFIXES,
    STAGES,
    MediaError,
    MediaInfo,
    list_frame_folder,
    probe,
)
from extract.media_video import (
    RESIZE_MODES,
    FrameBatch,
    count_frames,
    crop,
    iter_video_frames,
    resize,
    target_size,
)

__all__ = [
    "DEFAULT_FOLDER_FPS",
    "FRAME_SUFFIXES",
    "RESIZE_MODES",
    "STAGES",
    "FrameBatch",
    "MediaError",
    "MediaInfo",
    "count_frames",
    "crop",
    "iter_audio",
    "iter_timed_audio",
    "iter_video_frames",
    "list_frame_folder",
    "load_audio",
    "probe",
    "resize",
    "target_size",
]
