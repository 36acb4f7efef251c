"""Clips made from media a user points at: a file, a frame folder, a folder tree, a clips file.

`affect extract --media` and `affect predict --media` both take their clips from here, so the
two agree on what a folder of media means:

- a file is one clip (audio if its suffix says so, else video), named after the file (without
  its suffix);
- a folder that holds frame images is one clip (a frame folder), named after the folder;
- any other folder is searched, subfolders included: each media file and each frame folder in
  it is a clip named by its path below that folder (`s01/take2` for `s01/take2.mp4`), and a
  video's audio may sit beside it as a same-named audio file (`take2.wav`), which is then that
  clip's audio;
- a `.jsonl`/`.json` file is a clips file (see the README).
"""

from __future__ import annotations

from pathlib import Path

from extract.media_base import FRAME_SUFFIXES
from features_store.errors import UserError
from features_store.paths import check_clip_id
from pipelines.datasets.files import VIDEO_SUFFIXES

AUDIO_SUFFIXES = (".wav", ".mp3", ".flac", ".m4a", ".ogg")
MEDIA_SUFFIXES = VIDEO_SUFFIXES + AUDIO_SUFFIXES
CLIPS_FILE_SUFFIXES = (".jsonl", ".json")


def media_clips(media: str) -> list[dict]:
    """The clips of `media` (a media file, a frame folder, a folder tree or a clips file)."""
    from extract.clips import read_clips_file

    path = Path(media)
    if not path.exists():
        raise UserError(f"{media}: no such file or folder")
    if path.is_file() and path.suffix.lower() in CLIPS_FILE_SUFFIXES:
        return read_clips_file(str(path))
    if path.is_file():  # named by the user: a video unless its suffix says audio
        return [_clip(path.stem, [path])]
    if _is_frame_folder(path):
        return [{"clip_id": path.resolve().name, "frames": str(path.resolve())}]
    clips = _folder_clips(path)
    if not clips:
        raise UserError(f"{media}: no media files ({', '.join(MEDIA_SUFFIXES)}) or frame "
                        "folders in this folder or below it")
    return clips


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _is_frame_folder(folder: Path) -> bool:
    return any(p.suffix.lower() in FRAME_SUFFIXES and p.is_file() and _visible(p)
               for p in folder.iterdir())


def _folder_clips(root: Path) -> list[dict]:
    """One clip per media file (a video and a same-named audio file beside it: one clip) and
    per frame folder under `root`, named by the path below `root`."""
    files: dict[str, list[Path]] = {}  # clip id -> its media files
    frame_folders: dict[str, Path] = {}
    pending = [root]
    while pending:
        folder = pending.pop()
        for entry in sorted(folder.iterdir()):
            if not _visible(entry):
                continue
            if entry.is_dir():
                if _is_frame_folder(entry):
                    frame_folders[entry.relative_to(root).as_posix()] = entry
                else:
                    pending.append(entry)
            elif entry.suffix.lower() in MEDIA_SUFFIXES:
                clip_id = entry.relative_to(root).with_suffix("").as_posix()
                files.setdefault(clip_id, []).append(entry)
    clips = []
    for clip_id in sorted({*files, *frame_folders}):
        check_clip_id(clip_id, str(root / clip_id))
        if clip_id in frame_folders:
            if clip_id in files:
                raise UserError(f"{files[clip_id][0]}: clip {clip_id!r} is also the frame "
                                f"folder {frame_folders[clip_id]}; rename one of them")
            clips.append({"clip_id": clip_id, "frames": str(frame_folders[clip_id].resolve())})
        else:
            clips.append(_clip(clip_id, files[clip_id]))
    return clips


def _clip(clip_id: str, paths: list[Path]) -> dict:
    """A clip of one video and/or one audio file (two videos or two audio files of one name
    would be two clips under one id: refused, naming both)."""
    clip: dict = {"clip_id": clip_id}
    for path in paths:
        field = "audio" if path.suffix.lower() in AUDIO_SUFFIXES else "video"
        if field in clip:
            raise UserError(f"{path}: clip {clip_id!r} already has the {field} file "
                            f"{clip[field]}; keep one {field} file per name")
        clip[field] = str(path.resolve())
    return clip
