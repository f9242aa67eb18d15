"""`permanent`: run the piece, check a gallery machine, list audio outputs.

Each subcommand's options are declared by an `_add_...` function right above its handler;
`build_parser` only lists them.
"""

from __future__ import annotations

import time

LAUNCHED = time.monotonic()   # before anything heavy is imported: "time since launch" starts here

import argparse
import faulthandler
import logging
import os
import sys
from pathlib import Path

from .app import check_sound_and_model
from .errors import PermanentError

log = logging.getLogger("permanent")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="permanent",
        description="A server room hums; a small language model writes in it.")
    sub = parser.add_subparsers(dest="command")
    for add in (_add_run, _add_check, _add_devices, _add_bench, _add_render, _add_archive,
                _add_screensaver, _add_audition, _add_voice):
        add(sub)
    _add_common_options(parser, top=True)
    _add_run_options(parser)   # `permanent` alone runs the piece
    parser.set_defaults(func=cmd_run)
    return parser


def _add_common_options(parser: argparse.ArgumentParser, top: bool = False) -> None:
    """--config and -v, on the top level and on every subcommand. On subcommands SUPPRESS
    leaves a value given before the subcommand in place: `permanent --config X check`."""
    parser.add_argument("--config", type=Path, default=None if top else argparse.SUPPRESS,
                        help="the settings file (default: ./config.yaml, else built-in defaults)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        default=False if top else argparse.SUPPRESS, help="log more")


def _subcommand(sub, name: str, help: str, func) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help)
    _add_common_options(parser)
    parser.set_defaults(func=func)
    return parser


def _default_config() -> Path:
    return Path("config.yaml")


def _load(path: Path | None):
    from .config import Config, load_config

    if path is None:
        if not _default_config().is_file():
            return Config()
        path = _default_config()
    return load_config(path)


def _add_run(sub) -> None:
    _add_run_options(_subcommand(sub, "run", "run the piece (the default)", cmd_run))


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--windowed", action="store_true",
                        help="a window instead of fullscreen; Esc quits")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="stop by itself after this long (for tests and demos)")


def cmd_run(args) -> int:
    config = _load(args.config)
    if args.windowed:
        os.environ.setdefault("SDL_VIDEO_CENTERED", "1")
    source = check_sound_and_model(config)
    if not source.cached and not source.embedded:
        from .errors import ModelError
        raise ModelError(f"{config.where('model.name')}: model {source.label!r} is not in "
                         "the local Hugging Face cache and "
                         "nothing is downloaded here. Copy it into the cache, point "
                         "model.name at a local folder, or use 'embedded'.")
    if config.audio.enabled and (config.audio.device != "default" or config.audio.channels > 2):
        # A named output that is missing, or one with fewer channels than the speakers
        # asked for, is a configuration mistake: say so before starting.
        from .room.devices import (DeviceNotFound, TooFewChannels, choose_output,
                                   probe_output_devices, require_channels)
        try:
            device = choose_output(config.audio.device, probe_output_devices())
        except DeviceNotFound as e:
            raise DeviceNotFound(f"{config.where('audio.device')}: {e}") from None
        if device is not None:   # none at all: the piece runs silently, and says so
            try:
                require_channels(device, config.audio.channels)
            except TooFewChannels as e:
                raise TooFewChannels(f"{config.where('audio.channels')}: {e}") from None
    from .app import Piece

    _log_to_file(config)
    path = args.config or (_default_config() if _default_config().is_file() else None)
    return Piece(config, windowed=args.windowed, duration=args.duration, launched=LAUNCHED,
                 config_path=path).run()


def _log_to_file(config) -> None:
    """Besides stderr, a rotating log file: what a technician reads after a week away. A
    disk that fills is said once on stderr, and once again when the file is written again."""
    import platformdirs

    from .care.line_file import LineFileHandler

    path = Path(config.care.log_file or Path(platformdirs.user_log_dir("permanent")) /
                "permanent.log").expanduser()
    handler = LineFileHandler(path, int(config.care.log_megabytes * 2**20), backups=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)


def _add_check(sub) -> None:
    _subcommand(sub, "check", "validate the config, list audio outputs, say which model "
                "would load", cmd_check)


def cmd_check(args) -> int:
    config = _load(args.config)
    source = check_sound_and_model(config)
    print(f"config:  {config.source}: valid")
    print(f"sound:   preset {config.hum.preset!r}")
    state = "cached, loads at once" if source.cached else (
        "not converted yet: the first start converts it (about 20 s)" if source.embedded
        else "NOT in the local cache: it cannot load here")
    role = "fallback:" if config.model.server_url and config.model.fallback == "embedded" else "model:  "
    print(f"{role} {source.label} at {source.location} ({state})")
    if source.embedded:
        from .model.local.store import embedded_gguf
        print(f"         from {embedded_gguf()}")
    server_ok = True
    if config.model.server_url:
        server_ok = _check_server(config)
    ports_ok = _check_ports(config)
    audio_ok = _print_devices(config) or not config.audio.enabled
    return 0 if (source.cached or source.embedded) and server_ok and ports_ok and audio_ok \
        else 1


def _check_ports(config) -> bool:
    from .remote.ports import port_report

    report = port_report(config)
    for number, (_, line) in enumerate(report):
        print(f"{'ports:  ' if number == 0 else '        '} {line}")
    return all(fine for fine, _ in report)


def _check_server(config) -> bool:
    from .model.server.generator import ServerFault, probe_server

    fallback = {"embedded": "the embedded model above writes instead",
                "wait": "the piece waits for it, humming"}[config.model.fallback]
    try:
        lines = probe_server(config.model, config.text)
    except ServerFault as e:
        print(f"server:  {config.where('model.server_url')}: {e}\n"
              f"         while it cannot write, {fallback} (model.fallback)")
        return False
    print("server:  " + "\n         ".join(lines))
    return True


def _print_devices(config=None) -> bool:
    """List the outputs (with `config`, the one it would use); False when that one is
    missing or has too few channels for audio.channels."""
    from .room.devices import (DeviceNotFound, TooFewChannels, choose_output,
                               probe_output_devices, require_channels)

    devices = probe_output_devices()
    if not devices:
        print("audio:   no output devices: the piece would run silently")
        return True
    chosen, fits = None, True
    if config is not None:
        try:
            chosen = choose_output(config.audio.device, devices)
            if config.audio.enabled:
                require_channels(chosen, config.audio.channels)
                print(f"audio:   {config.audio.channels} channels on {chosen.name!r}")
        except DeviceNotFound as e:
            print(f"audio:   {e}")
            fits = False
        except TooFewChannels as e:
            print(f"audio:   {config.where('audio.channels')}: {e}")
            fits = False
    print("audio outputs:")
    for d in devices:
        marks = (" (default)" if d.is_default else "") + \
            ("  <- used" if chosen is not None and d.index == chosen.index else "")
        count = "?" if d.channels is None else d.channels
        behind = f": the sound server's sink {d.sink!r}" if d.sink else ""
        print(f"  {d.index:3d}  {d.name}  ({count} channels{behind}){marks}")
    return fits


def _add_devices(sub) -> None:
    _subcommand(sub, "devices", "list audio output devices", cmd_devices)


def cmd_devices(args) -> int:
    _print_devices()
    return 0


def _add_bench(sub) -> None:
    """`permanent bench` measures the standard set; each of its modes is a subcommand of
    its own, with only its own options."""
    bench = _subcommand(sub, "bench", "measure this machine against the piece's needs",
                        cmd_bench)
    bench.add_argument("--json", action="store_true", help="machine-readable output")
    bench.add_argument("--warm-only", action="store_true",
                       help="skip the launch with an empty model cache (and its conversion)")
    bench.add_argument("--variants", action="store_true",
                       help="also compare every way of running the model: runtimes, "
                       "weight packings, bf16, one thread, int8 dynamic quantization")
    modes = bench.add_subparsers(dest="bench_mode", metavar="MODE",
                                 help="instead of the standard set (each has its own --help)")
    for add in (_add_bench_anchor, _add_bench_shapes, _add_bench_soak, _add_bench_entropy,
                _add_bench_server, _add_bench_remote):
        mode = add(modes)
        mode.set_defaults(func=_refusing_standard_options(bench, mode.get_default("func")))


def _bench_mode(modes, name: str, help: str, func) -> argparse.ArgumentParser:
    mode = _subcommand(modes, name, help, func)
    # SUPPRESS, as for --config: `bench --json soak` keeps the --json given before the mode.
    mode.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help="machine-readable output")
    return mode


def _refusing_standard_options(bench: argparse.ArgumentParser, handler):
    """A mode's handler that refuses the standard set's options: argparse takes those into
    `bench`'s own options when they come before the mode's name (`bench --variants soak`)."""
    def checked(args) -> int:
        given = [flag for flag, name in (("--warm-only", "warm_only"), ("--variants", "variants"))
                 if getattr(args, name)]
        if given:
            bench.error(f"{' and '.join(given)}: only plain `permanent bench` takes "
                        f"{'them' if len(given) > 1 else 'it'}, not `bench {args.bench_mode}`")
        return handler(args)
    return checked


def cmd_bench(args) -> int:
    from .measure.bench import run_bench

    return run_bench(_load(args.config), args.config, as_json=args.json,
                     cold=not args.warm_only, variants=args.variants)


def _add_bench_anchor(modes) -> argparse.ArgumentParser:
    anchor = _bench_mode(modes, "anchor", "llama.cpp (llama-cpp-python) on the same GGUF, "
                         "voice, prompt, sampling and threads, against the piece's loop",
                         cmd_bench_alone)
    anchor.add_argument("--rounds", type=_positive_int, default=8,
                        help="rounds of a pass each in turn (default 8)")
    anchor.add_argument("--threads", type=_thread_counts, default=None,
                        help="thread counts to measure in turn, e.g. 1,2 (default: the "
                        "piece's own, as model.threads gives them)")
    return anchor


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def _thread_counts(text: str) -> list[int]:
    return [_positive_int(part.strip()) for part in text.split(",")]


def _add_bench_shapes(modes) -> argparse.ArgumentParser:
    return _bench_mode(modes, "shapes", "time the loop on SmolLM2-360M and -1.7B shapes "
                       "(random weights, 4-bit): which larger voice this computer could carry",
                       cmd_bench_alone)


def cmd_bench_alone(args) -> int:
    """A measurement that needs nothing of the standard set: the anchor, the shapes."""
    from .measure.bench import run_alone

    options = {"rounds": args.rounds, "threads": args.threads} \
        if args.bench_mode == "anchor" else {}
    return run_alone(args.bench_mode, _load(args.config), as_json=args.json, **options)


def _add_bench_remote(modes) -> argparse.ArgumentParser:
    remote = _bench_mode(modes, "remote", "the CPU and frame times OSC and the status page "
                         "add, with one OSC receiver and one page open", cmd_bench_remote)
    remote.add_argument("--seconds", type=float, default=30.0,
                        help="measured in each launch, after the first token (default 30)")
    remote.add_argument("--rounds", type=int, default=2,
                        help="launches with them off and on, each (default 2)")
    return remote


def cmd_bench_remote(args) -> int:
    from .measure.bench import report
    from .measure.remote_load import measure_remote, print_remote

    config = _load(args.config)   # a broken config is reported before the launches
    path = args.config or (_default_config() if _default_config().is_file() else None)
    return report(lambda machine: {"machine": machine, "date": time.strftime("%Y-%m-%d"),
                                   "remote": measure_remote(
                                       path, args.seconds, args.rounds,
                                       config.status.thumbnail_seconds)},
                  lambda results: print_remote(results["remote"]), args.json,
                  "permanent bench remote")


def _add_bench_soak(modes) -> argparse.ArgumentParser:
    soak = _bench_mode(modes, "soak", "record the live hum through a private PulseAudio "
                       "server while the model writes flat out and a busy loop holds one "
                       "core; count dropouts and clicks", cmd_bench_soak)
    soak.add_argument("--seconds", type=float, default=600.0,
                      help="how long to record (default 600: the 10-minute check)")
    soak.add_argument("--no-hog", action="store_true", help="no busy loop, only the model")
    return soak


def cmd_bench_soak(args) -> int:
    import json

    from .measure.audio_soak import audio_soak
    from .measure.machine import describe_machine, machine_line

    _load(args.config)   # a broken config is reported before minutes of recording
    machine = describe_machine()
    if not args.json:
        print(f"recording the hum for {args.seconds:.0f} s, the model writing flat out"
              f"{'' if args.no_hog else ' and a busy loop on one core'} ({machine_line(machine)})",
              file=sys.stderr)
    result = audio_soak(args.seconds, args.config, hog=not args.no_hog)
    if args.json:
        print(json.dumps({"machine": machine, **result}, indent=2))
    else:
        print(f"audio soak: {result['seconds']} s heard, {result['dropouts']} dropouts of more "
              f"than 10 ms (longest {result['longest_dropout_ms']} ms), largest sample step "
              f"{result['largest_step']}, {result['underruns_logged']} underruns logged; "
              f"recording and log in {result['folder']}")
    return 0 if result["dropouts"] == 0 else 1


def _add_bench_entropy(modes) -> argparse.ArgumentParser:
    entropy = _bench_mode(modes, "entropy", "how close the entropy a server's top-k "
                          "log-probabilities give comes to the exact one, on the embedded "
                          "model's own writing", cmd_bench_entropy)
    entropy.add_argument("--tokens", type=int, default=2000,
                         help="how many tokens (default 2000)")
    entropy.add_argument("--top-k", type=int, default=20,
                         help="alternatives per token (default 20)")
    entropy.add_argument("--seed", type=int, default=0, help="the passes' seed (default 0)")
    return entropy


def cmd_bench_entropy(args) -> int:
    import dataclasses
    import json

    from .measure import entropy_estimate as estimate
    from .measure.machine import describe_machine, machine_line
    from .model.server.top_k_entropy import TAIL_OFFSET_BITS

    config = _load(args.config)
    check_sound_and_model(config)
    config = config.replace(text=dataclasses.replace(config.text, seed=args.seed))
    if not args.json:
        print(f"the embedded model writes {args.tokens} tokens ({machine_line(describe_machine())})",
              file=sys.stderr)
    sample = estimate.sample_model(config, args.tokens)
    result = estimate.report(sample, args.top_k, TAIL_OFFSET_BITS)
    result["best_offset_bits"] = estimate.fit_offset(sample, args.top_k)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        estimate.print_report(result)
        print(f"the offset that fits these tokens best: {result['best_offset_bits']:.2f} bits "
              f"(shipped: {TAIL_OFFSET_BITS:.2f})")
    return 0


def _add_bench_server(modes) -> argparse.ArgumentParser:
    server = _bench_mode(modes, "server", "tokens/s from the configured inference server "
                         "(model.server_url) for 1, 2, ... pieces at once, and how many "
                         "screens that sustains at the configured pacing", cmd_bench_server)
    server.add_argument("--clients", default="1,2", metavar="N,N",
                        help="how many pieces at once (default 1,2)")
    server.add_argument("--seconds", type=float, default=30.0,
                        help="how long each count runs (default 30)")
    return server


def cmd_bench_server(args) -> int:
    import json

    from .config import masked_url
    from .errors import ConfigError
    from .measure.machine import describe_machine, machine_line
    from .measure.server_load import print_load, server_load
    from .model.server.generator import ServerFault

    config = _load(args.config)
    if not config.model.server_url:
        raise ConfigError(f"{config.source}: model.server_url is not set; bench server "
                          "measures the server it names.")
    try:
        clients = [int(n) for n in args.clients.split(",")]
    except ValueError:
        raise ConfigError(f"--clients {args.clients!r}: give counts like 1,2,4") from None
    if not args.json:
        print(f"{config.model.server_model} at {masked_url(config.model.server_url)}, "
              f"{args.seconds:.0f} s each (this client: {machine_line(describe_machine())})",
              file=sys.stderr)
    results = []
    for count in clients:
        try:
            results.append(server_load(config, count, args.seconds))
        except ServerFault as e:   # reported like any other error, at its line
            raise ServerFault(f"{config.where('model.server_url')}: {e}") from None
        if not args.json:
            print_load(results[-1])
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


def _add_render(sub) -> None:
    render = _subcommand(sub, "render", "record the piece offline: hum.wav, video, "
                         "tokens.jsonl, contact sheet, spectrogram", cmd_render)
    render.add_argument("--seconds", type=float, required=True, help="length of the piece to render")
    render.add_argument("--out", type=Path, required=True, help="folder to write into")
    render.add_argument("--seed", type=int, default=0, help="same seed, same render (default 0)")
    render.add_argument("--size", type=_size, default=(1280, 720), metavar="WxH",
                        help="frame size (default 1280x720)")
    render.add_argument("--fps", type=int, default=30, help="frames per second (default 30)")


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 1280x720") from None
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError("the size must be even and at least 64x64")
    return width, height


def cmd_render(args) -> int:
    from .render import render

    config = _load(args.config)
    check_sound_and_model(config)
    result = render(config, args.seconds, args.out, seed=args.seed, size=args.size,
                    fps=args.fps)
    print(f"{'interrupted: ' if result.interrupted else ''}rendered {result.seconds:.1f} s "
          f"({result.tokens} tokens) into {result.out}")
    return 130 if result.interrupted else 0


def _add_archive(sub) -> None:
    archive = _subcommand(sub, "archive", "show the most recent passes", cmd_archive)
    archive.add_argument("-n", "--count", type=int, default=5, help="how many (default 5)")


def cmd_archive(args) -> int:
    import textwrap

    from .care.archive import default_path, recent

    config = _load(args.config)
    path = Path(config.care.archive_file or default_path())
    passes = recent(path, args.count)
    if not passes:
        print(f"no passes archived yet in {path}")
        return 0
    for record in passes:
        bits = record.get("entropy_bits") or [0.0]
        print(f"{record['time']}  pass {record['pass']}  {record['model']}  "
              f"{len(bits)} tokens, mean entropy {sum(bits) / len(bits):.2f} bits")
        print(textwrap.indent(textwrap.fill(record["text"], 88), "    "), end="\n\n")
    return 0


def _add_screensaver(sub) -> None:
    saver = _subcommand(sub, "screensaver", "run as a screensaver: in XScreenSaver's window, "
                        "fullscreen until input, or as a Windows .scr", cmd_screensaver)
    saver.add_argument("--window-id", "-window-id", metavar="ID",
                       help="draw into this X window (decimal or 0x hex), as XScreenSaver asks")
    saver.add_argument("--root", "-root", action="store_true", help="draw on the root window")
    saver.add_argument("--duration", type=float, default=None, help=argparse.SUPPRESS)
    saver.add_argument("windows", nargs="*", metavar="/s | /c | /p HWND",
                       help="Windows screensaver conventions")


def cmd_screensaver(args) -> int:
    from .screen.screensaver import SaverArgumentError, choose_mode, describe_configuration, \
        prepare_environment

    try:
        mode = choose_mode(args.window_id, args.root, args.windows, os.environ, sys.argv[0])
    except SaverArgumentError as e:
        print(f"permanent screensaver: {e}", file=sys.stderr)
        return 2
    if mode.kind == "configure":
        print(describe_configuration(args.config))
        return 0
    config = _load(args.config).as_screensaver()
    check_sound_and_model(config)
    _log_to_file(config)
    try:
        prepare_environment(mode)
    except SaverArgumentError as e:
        print(f"permanent screensaver: {e}", file=sys.stderr)
        return 2
    from .app import Piece

    embedded = mode.kind in ("window", "root")
    log.info("screensaver: %s", f"window {mode.window_id:#x}" if mode.window_id else mode.kind)
    return Piece(config, windowed=embedded, launched=LAUNCHED, duration=args.duration,
                 mode="embedded" if embedded else "standalone",
                 first_pass_tokens=config.screensaver.first_pass_tokens).run()


def _add_audition(sub) -> None:
    from .measure.reading import RUBRIC

    audition = _subcommand(sub, "audition", "write passes as fast as the model can and say "
                           "how they read: the curator's tool for tuning the voice",
                           cmd_audition)
    audition.epilog, audition.formatter_class = RUBRIC, argparse.RawDescriptionHelpFormatter
    audition.add_argument("--passes", type=int, default=20, help="how many (default 20)")
    audition.add_argument("--seed", type=int, default=0,
                          help="the passes the piece writes from seed S, in order: same "
                               "seed, same passes (default 0)")
    audition.add_argument("--drafts", action="store_true",
                          help="with text.drafts above 1, print every draft beside the "
                               "one chosen, with their scores")
    audition.add_argument("--json", action="store_true", help="machine-readable output")
    audition.add_argument("--markdown", type=Path, metavar="FILE",
                          help="also write the passes and summary as Markdown")
    audition.add_argument("--compare", type=Path, nargs=2, metavar=("A.yaml", "B.yaml"),
                          help="two configs on the same seeds, side by side")


def cmd_audition(args) -> int:
    from .measure.audition import run_audition

    paths = args.compare or [args.config]
    configs = []
    for path in paths:
        config = _load(path)
        check_sound_and_model(config)
        configs.append((str(path) if path else "built-in defaults", config))
    return run_audition(configs, args.passes, args.seed, args.json, args.markdown,
                        args.drafts)


def _add_voice(sub) -> None:
    voice = sub.add_parser("voice", help="the model's voice: `permanent voice train`")
    voice.set_defaults(func=lambda args: voice.print_usage() or 2)
    voices = voice.add_subparsers(dest="voice")
    _add_voice_train(voices)
    _add_voice_export(voices)


def _add_voice_train(voices) -> None:
    train = _subcommand(voices, "train", "train a voice (a LoRA adapter) from a corpus of "
                        "passages separated by lines holding only %%", cmd_voice_train)
    train.add_argument("corpus", type=Path, help="a text file (or a folder of .txt files) of "
                       "passages separated by lines holding only %%")
    train.add_argument("--out", type=Path, required=True, help="the folder to write the voice to")
    train.add_argument("--epochs", type=int, default=3)
    train.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    train.add_argument("--learning-rate", type=float, default=1e-3)
    train.add_argument("--seed", type=int, default=0, help="same seed, same voice (default 0)")
    train.add_argument("--threads", type=int, default=None,
                       help="CPU threads (default: model.threads); 1 keeps a shared machine usable")


def cmd_voice_train(args) -> int:
    from tqdm import tqdm

    from .model.local.store import ensure_converted, progress_log
    from .model.voice.training import TrainingSettings, train_voice

    config = _load(args.config)
    source = check_sound_and_model(config)
    ensure_converted(source, log=progress_log)
    settings = TrainingSettings(epochs=args.epochs, rank=args.rank,
                                learning_rate=args.learning_rate, seed=args.seed)
    record = train_voice(source.location, args.corpus, args.out, config.text, settings,
                         progress=tqdm, threads=args.threads or config.model.threads)
    print(f"trained a voice on {record['passages']} passages in {record['seconds']} s "
          f"(loss {record['loss_first_epoch']} -> {record['loss_last_epoch']}) into {args.out}\n"
          f"use it with   text:\n  voice: {args.out.resolve()}")
    return 0


def _add_voice_export(voices) -> None:
    export = _subcommand(voices, "export-gguf", "write the voice as a GGUF LoRA adapter for "
                         "llama.cpp's server (--lora FILE)", cmd_voice_export)
    export.add_argument("--out", type=Path, required=True, help="the .gguf file to write")
    export.add_argument("--voice", default=None,
                        help="builtin or a folder from `voice train` (default: text.voice)")


def cmd_voice_export(args) -> int:
    import dataclasses

    from .errors import ModelError
    from .model.local.store import ensure_converted, progress_log
    from .model.voice.adapter import resolve_voice
    from .model.voice.export import export_gguf

    config = _load(args.config)
    if args.voice is not None:
        config = config.replace(text=dataclasses.replace(config.text, voice=args.voice))
    source = check_sound_and_model(config)
    folder = resolve_voice(config.text.voice, config.base_dir, source.embedded)
    if folder is None:
        where = "--voice" if args.voice is not None else config.where("text.voice")
        raise ModelError(f"{where}: is {config.text.voice!r}: there is no voice to export. "
                         "Use --voice builtin or a folder from `permanent voice train`.")
    ensure_converted(source, log=progress_log)
    layers = export_gguf(folder, source.location, args.out)
    print(f"wrote {layers} layers of the voice in {folder} to {args.out}\n"
          f"serve it beside the model's GGUF: llama.cpp's `llama-server --lora {args.out}`, "
          f"or `python -m llama_cpp.server --lora_path {args.out}`")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    # A crash in a C library (SDL, X, PortAudio) then leaves its stack in the log.
    try:
        faulthandler.enable()
    except (OSError, ValueError, RuntimeError):   # a stderr that is no file: nowhere to write
        pass
    code = _call(args)
    if args.func in (cmd_run, cmd_screensaver):
        # The piece has closed its window, children and files; a host (XScreenSaver,
        # systemd) counts the seconds until the process is gone, so skip the teardown.
        from .lifecycle import exit_now
        exit_now(code)
    return code


def _call(args) -> int:
    try:
        return args.func(args)
    except PermanentError as e:
        print(f"permanent: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:   # `permanent check | head`: the reader left, nothing is wrong
        return 0


if __name__ == "__main__":
    sys.exit(main())
