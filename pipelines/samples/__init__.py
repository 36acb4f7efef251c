"""Generated sample datasets, one generator per layout, registered by the layout's name.

    info = generate_sample("react", "/tmp/react", clips=6, seconds=2, seed=0, size=32)

Each writes a tiny copy of the layout (real encoded media, labels in the native formats) with a
planted learnable signal, so the real adapters, the extraction and the heads can be exercised
end to end without the real data.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from . import affwild2, cremad, iemocap, meld, mosei, raer, react
from .base import SampleInfo, SampleOptions

_GENERATORS: dict[str, ModuleType] = {
    "react": react,
    "raer": raer,
    "affwild2": affwild2,
    "cremad": cremad,
    "meld": meld,
    "iemocap": iemocap,
    "mosei": mosei,
}


def list_samples() -> list[str]:
    return list(_GENERATORS)


def sample_defaults(layout: str) -> dict[str, float]:
    return dict(_module(layout).DEFAULTS)


def get_generator(layout: str) -> Callable[[Path, SampleOptions], SampleInfo]:
    return _module(layout).generate


def _module(layout: str) -> ModuleType:
    module = _GENERATORS.get(layout)
    if module is None:
        from features_store.errors import UserError

        raise UserError(f"no sample generator for layout {layout!r} "
                        f"(known: {', '.join(_GENERATORS)})")
    return module


def generate_sample(layout: str, out: str | Path, clips: int | None = None,
                    seconds: float | None = None, seed: int = 0, size: int | None = None
                    ) -> SampleInfo:
    """Write a sample copy of `layout` into `out` (created; it must be empty if it exists)."""
    from features_store.errors import UserError

    defaults = sample_defaults(layout)
    options = SampleOptions(
        clips=int(clips if clips is not None else defaults["clips"]),
        seconds=float(seconds if seconds is not None else defaults["seconds"]),
        seed=int(seed),
        size=int(size if size is not None else defaults["size"]),
    )
    if options.clips < 1 or options.seconds <= 0 or options.size < 16:
        raise UserError(f"sample {layout}: need clips >= 1, seconds > 0 and size >= 16, got "
                        f"clips={options.clips} seconds={options.seconds} size={options.size}")
    root = Path(out)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(f"{root}: exists and is not an empty folder; choose a new --out")
    root.mkdir(parents=True, exist_ok=True)
    info = _module(layout).generate(root, options)
    info.write()
    return info


__all__ = ["SampleInfo", "SampleOptions", "generate_sample", "get_generator", "list_samples",
           "sample_defaults"]
