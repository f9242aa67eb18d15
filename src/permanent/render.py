"""`permanent render`: the piece on a virtual clock, written to files.

The same Conductor, typesetting, fades and hum graph as the live piece, driven frame by
frame instead of by the wall clock. The model is asked for a token whenever the
Conductor wants one, so the timeline depends only on the seed and the config, never on
how fast this machine is; the hum is rendered afterwards from the same cues.

    hum.wav           the room, 48 kHz stereo (pyo, offline): what a stereo pair plays
    hum-Nch.wav       with audio.channels above 2, the room on its N speakers as well
    piece.mp4         video and hum together (when ffmpeg is on PATH), else frames/*.png
    tokens.jsonl      one line per shown token: time, pass, text, entropy, fan RPM, pitch
    contact.png       frames across the render, on one sheet
    spectrogram.png   the hum's spectrogram, the lead fan's blade-pass line drawn over it
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .config import Config
from .room.fans import settle
from .room.hum_render import HumCommand

log = logging.getLogger("permanent.render")
CONTACT_FRAMES = 12


@dataclass
class FanTrack:
    """The lead fan's speed, simulated with the same inertia the hum's `Port` applies."""
    rpm: float
    spin_up: float
    spin_down: float
    target: float = 0.0
    at: float = 0.0

    def __post_init__(self):
        self.target = self.rpm

    def rpm_at(self, t: float) -> float:
        return settle(self.rpm, self.target, t - self.at, self.spin_up, self.spin_down)

    def aim(self, t: float, target: float) -> None:
        self.rpm, self.at, self.target = self.rpm_at(t), t, target


@dataclass
class RenderResult:
    out: Path
    seconds: float                  # of piece rendered (less than asked if interrupted)
    tokens: int
    video: Optional[Path]
    interrupted: bool = False
    files: list = field(default_factory=list)


def render(config: Config, seconds: float, out: Path, seed: int = 0,
           size: tuple[int, int] = (1280, 720), fps: int = 30,
           progress: bool = True) -> RenderResult:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")   # frames are drawn offscreen
    from tqdm import tqdm

    from .screen.display import PageView, pygame
    from .model.local.generator import load_generator
    from .room.hum_render import render_hum
    from .model.local.store import ensure_converted, resolve
    from .screen.pacing import Conductor, Phase, perform
    from .room.preset import load_preset

    config = config.replace(text=dataclasses.replace(config.text, seed=seed))
    out.mkdir(parents=True, exist_ok=True)
    preset = load_preset(config.hum.preset, config.base_dir)
    source = resolve(config.model, config.base_dir)
    ensure_converted(source)
    generator = load_generator(source, config.model, config.text, config.base_dir)
    passes = _token_stream(generator)

    pygame.display.init()
    pygame.font.init()
    surface = pygame.Surface(size)
    view = PageView(config.display, size, config.base_dir)
    conductor = Conductor(config.pacing, random.Random(seed))
    fan = FanTrack(preset.rpm.idle, config.hum.spin_up_seconds, config.hum.spin_down_seconds)
    frames = _FrameSink(out, size, fps)
    contact_at = {round(seconds * (i + 0.5) / CONTACT_FRAMES * fps) for i in range(CONTACT_FRAMES)}
    contact: list[pygame.Surface] = []
    n_frames = round(seconds * fps)
    done_frames, interrupted = 0, False
    with open(out / "tokens.jsonl", "w", encoding="utf-8") as tokens_file, \
            tqdm(total=n_frames, unit="frame", disable=not progress, desc="rendering",
                 mininterval=0.5) as bar:
        stage = _RenderStage(view, preset, config.hum, fan, tokens_file)
        try:
            for frame in range(n_frames):
                now = frame / fps
                perform(conductor.tick(now, lambda: next(passes)), stage, now)
                view.draw(surface, now, conductor.opacity, conductor.phase is Phase.WRITING)
                frames.write(surface)
                if frame in contact_at:
                    contact.append(surface.copy())
                done_frames = frame + 1
                bar.update(1)
        except KeyboardInterrupt:
            interrupted = True
            log.warning("interrupted: keeping the first %.1f s", done_frames / fps)
    rendered = done_frames / fps
    wav = render_hum(preset, config.hum, stage.hum_commands, rendered, out / "hum.wav",
                     sample_rate=config.audio.sample_rate,
                     lead_speaker=config.audio.lead_speaker if config.audio.channels == 2
                     else None)
    if config.audio.channels > 2:
        # The ring as the gallery hears it; hum.wav beside it is the same room on a pair
        # (the fans at their `pan`), as the piece plays it with channels: 2, and the video's.
        render_hum(preset, config.hum, stage.hum_commands, rendered,
                   out / f"hum-{config.audio.channels}ch.wav",
                   sample_rate=config.audio.sample_rate, channels=config.audio.channels,
                   lead_speaker=config.audio.lead_speaker)
    video = frames.finish(wav)
    _contact_sheet(contact, out / "contact.png")
    from .measure.spectrogram import draw_spectrogram
    draw_spectrogram(wav, out / "tokens.jsonl", out / "spectrogram.png")
    pygame.quit()
    count = sum(1 for _ in open(out / "tokens.jsonl", encoding="utf-8"))
    return RenderResult(out, rendered, count, video, interrupted)


class _RenderStage:
    """What the cues do in a render: the page, the lead fan's track, the hum's commands on
    the render's clock, and a line of tokens.jsonl for each token shown."""

    def __init__(self, view, preset, hum_settings, fan: FanTrack, tokens_file):
        self.view, self.preset, self.hum_settings = view, preset, hum_settings
        self.fan, self.tokens_file = fan, tokens_file
        self.hum_commands: list = []

    def reveal(self, token, due: float, now: float) -> None:
        self.view.append(token.text, now)   # the page its frame's time, the hum the pacing's
        target = self.preset.rpm_for_entropy(token.entropy_bits, self.hum_settings)
        self.fan.aim(due, target)
        self.hum_commands.append(HumCommand(due, "token", token.entropy_bits))
        self.tokens_file.write(json.dumps({
            "t": round(due, 4), "pass": token.pass_id, "text": token.text,
            "entropy_bits": round(token.entropy_bits, 4),
            "target_rpm": round(target, 2), "fan_rpm": round(self.fan.rpm, 2),
            "blade_pass_hz": round(self.preset.lead_blade_pass_hz(self.fan.rpm), 3),
            "last": token.is_last,   # after it the fans settle to idle
        }, ensure_ascii=False) + "\n")
        self.tokens_file.flush()   # readable line by line, even if interrupted

    def pass_ended(self, due: float) -> None:
        self.fan.aim(due, self.preset.rpm.idle)
        self.hum_commands.append(HumCommand(due, "idle"))

    def cleared(self) -> None:
        self.view.clear()


def _token_stream(generator):
    """Every token of every pass, in order: the render never waits for the model."""
    pass_id = 0
    while True:
        yield from generator.write_pass(pass_id)
        pass_id += 1


class _FrameSink:
    """Frames to ffmpeg (H.264 + the hum as AAC) when it is installed, else to PNG files."""

    def __init__(self, out: Path, size: tuple[int, int], fps: int):
        self.out, self.size, self.fps = out, size, fps
        self.ffmpeg = shutil.which("ffmpeg")
        self.count = 0
        if self.ffmpeg:
            self.silent_video = out / "video-only.mp4"
            self.encoder = subprocess.Popen(
                [self.ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
                 "-s", f"{size[0]}x{size[1]}", "-r", str(fps), "-i", "-",
                 "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p",
                 str(self.silent_video)], stdin=subprocess.PIPE)
        else:
            (out / "frames").mkdir(exist_ok=True)

    def write(self, surface) -> None:
        import pygame

        if self.ffmpeg:
            self.encoder.stdin.write(pygame.image.tobytes(surface, "RGB"))
        else:
            pygame.image.save(surface, str(self.out / "frames" / f"{self.count:06d}.png"))
        self.count += 1

    def finish(self, wav: Path) -> Optional[Path]:
        if not self.ffmpeg:
            log.info("ffmpeg is not installed: frames are in %s. Join them with: ffmpeg -r %d "
                     "-i %s/frames/%%06d.png -i %s -pix_fmt yuv420p -shortest piece.mp4",
                     self.out / "frames", self.fps, self.out, wav)
            return None
        self.encoder.stdin.close()
        self.encoder.wait()
        video = self.out / "piece.mp4"
        subprocess.run([self.ffmpeg, "-y", "-loglevel", "error", "-i", str(self.silent_video),
                        "-i", str(wav), "-c:v", "copy", "-c:a", "aac", "-b:a", "192k",
                        "-shortest", str(video)], check=True)
        self.silent_video.unlink()
        return video


def _contact_sheet(frames, path: Path, columns: int = 4) -> None:
    import pygame

    if not frames:
        return
    width, height = frames[0].get_size()
    thumb = (width // 4, height // 4)
    gap = 8
    rows = -(-len(frames) // columns)
    sheet = pygame.Surface((columns * (thumb[0] + gap) + gap, rows * (thumb[1] + gap) + gap))
    sheet.fill((40, 40, 40))
    for i, frame in enumerate(frames):
        x = gap + (i % columns) * (thumb[0] + gap)
        y = gap + (i // columns) * (thumb[1] + gap)
        sheet.blit(pygame.transform.smoothscale(frame, thumb), (x, y))
    pygame.image.save(sheet, str(path))
