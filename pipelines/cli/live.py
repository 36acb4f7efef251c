"""`affect live`: a trained head on a camera, a network stream or a file, in real time."""

from __future__ import annotations

from pathlib import Path

import click

from features_store.errors import UserError


@click.command()
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False))
@click.option("--source", required=True, help="A media file, a network URL (udp://, rtp://, "
              "rtsp://, http://), /dev/videoN, `camera` (the default camera) or FORMAT:DEVICE "
              "(v4l2, alsa, pulse, avfoundation, dshow).")
@click.option("--audio-source", default=None,
              help="A separate microphone (e.g. alsa:default, alsa:pulse) or audio URL; with a "
                   "file as --source, needs --realtime (it is placed by the wall clock).")
@click.option("--realtime", is_flag=True,
              help="Play a file at its own pace (default: as fast as possible).")
@click.option("--idle-timeout", default=5.0, show_default=True, type=float,
              help="Seconds a network source may stay silent before live stops.")
@click.option("--text", default=None, help="The sentence a run's text stream encodes.")
@click.option("--transcript", default=None, type=click.Path(dir_okay=False),
              help="A text file whose text the run's text stream encodes (instead of --text).")
@click.option("--audio-window", default=1.0, show_default=True, type=float,
              help="Seconds of past audio each audio encoder sees before a frame.")
@click.option("--audio-lookahead", default=0.05, show_default=True, type=float,
              help="Seconds of audio after a frame an audio encoder may see (its analysis "
              "window reaches past its hop); adds that much latency.")
@click.option("--window", "window_s", default=None, type=float, metavar="SECONDS",
              help="A windowed head's sliding window (temporal_attention, tpn_awm, regnn): "
              "seconds of the most recent frames each prediction reads (default: the head's; "
              "the header line says which).")
@click.option("--hop", "hop_s", default=None, type=float, metavar="SECONDS",
              help="Seconds between two windows' ends (default: the head's).")
@click.option("--out", "out_file", default=None, type=click.Path(dir_okay=False),
              help="Write the JSON lines here instead of stdout.")
@click.option("--serve", default=None, metavar="HOST:PORT",
              help="Serve a live page (circumplex or class bars, latency, drops) here.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--weights", "weights", multiple=True, metavar="ENCODER=PATH",
              help="Weights file for an encoder whose recorded file moved.")
def live(run_dir: str, source: str, audio_source: str | None, realtime: bool,
         idle_timeout: float, text: str | None, transcript: str | None, audio_window: float,
         audio_lookahead: float, window_s: float | None, hop_s: float | None,
         out_file: str | None, serve: str | None, device: str,
         weights: tuple[str, ...]) -> None:
    """Run a trained head on a camera, a network stream or a file, one JSON line per output."""
    from pipelines.live import live as run_live
    from pipelines.live import summary_line
    from pipelines.predict_media import parse_weights

    if transcript is not None:
        if text is not None:
            raise UserError("--text and --transcript: give one of them")
        try:
            text = Path(transcript).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{transcript}: cannot read the transcript ({exc})") from None
    if idle_timeout <= 0:
        raise UserError(f"--idle-timeout {idle_timeout}: must be positive")
    for flag, value in (("--window", window_s), ("--hop", hop_s)):
        if value is not None and not value > 0:  # before the run and its encoders load
            raise UserError(f"{flag} {value:g}: must be a positive number of seconds")

    def ready(line: str) -> None:
        click.echo(line, err=True)

    out = open(out_file, "w", encoding="utf-8") if out_file else None
    try:
        summary = run_live(run_dir, source, audio_source=audio_source, realtime=realtime,
                           idle_timeout_s=idle_timeout, device=device,
                           weights=parse_weights(weights), text=text,
                           audio_window_s=audio_window,
                           audio_lookahead_s=audio_lookahead, out=out, serve=serve, on_ready=ready,
                           window_s=window_s, hop_s=hop_s)
    finally:
        if out is not None:
            out.close()
    click.echo(summary_line(summary), err=True)
