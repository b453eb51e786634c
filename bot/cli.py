"""The `imagine` command line. Heavy imports (torch, discord.py) happen inside the commands that need them."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bot.config import Settings, describe_options, find_config_file, load_settings
from bot.errors import ImagineError, UsageError
from engine.errors import EngineError, InvalidRequest
from engine.jobs import MAX_SEED, GenerationSpec, random_seed


def _seed(value: str) -> int:
    try:
        seed = int(value)
    except ValueError:
        seed = -1
    if not 0 <= seed <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"seed must be a whole number from 0 to {MAX_SEED} (got {value!r})")
    return seed


def _whole(name: str) -> type[int]:
    def parse(value: str) -> int:
        try:
            return int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number (got {value!r})") from None

    parse.__name__ = name
    return parse  # type: ignore[return-value]


def _size(value: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", value)
    if not match:
        raise argparse.ArgumentTypeError(f"size must look like 512x512, width x height in pixels (got {value!r})")
    return int(match.group(1)), int(match.group(2))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imagine", description="Self-hosted image generation for Discord.")
    parser.add_argument("--config", metavar="PATH", help="settings file (default: $IMAGINE_CONFIG or ./imagine.toml)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("run", help="run the Discord bot with a supervised local engine (one machine)")
    commands.add_parser("bot", help="run only the Discord bot (engines run elsewhere)")
    engine = commands.add_parser("engine", help="run only an engine that works the queue")
    engine.add_argument("--worker-id", help="name of this engine in the queue (default: the host name)")
    engine.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    engine.add_argument("--models", help="comma-separated model names to serve (default: all configured)")

    generate = commands.add_parser("generate", help="make images locally, without Discord")
    generate.add_argument("prompt")
    generate.add_argument(
        "--model", help="a configured model name, hub id, folder or checkpoint (default: the default model)"
    )
    generate.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write PNGs into")
    generate.add_argument("--negative", default="", help="what to keep out of the image")
    generate.add_argument("--seed", type=_seed, help=f"0 to {MAX_SEED} (default: random)")
    generate.add_argument("--steps", type=_whole("steps"), help="sampling steps (default: the model's)")
    generate.add_argument("--size", type=_size, metavar="WxH", help="image size, e.g. 512x512")
    generate.add_argument("--count", type=_whole("count"), default=1, help="number of images (default 1)")
    generate.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    generate.add_argument("--style", help="a LoRA style from the styles folder")
    generate.add_argument("--style-strength", type=float, help="how strongly the style applies (0 to 2)")

    db = commands.add_parser("db", help="database tasks")
    db_commands = db.add_subparsers(dest="db_command", required=True, metavar="TASK")
    db_commands.add_parser("upgrade", help="apply database migrations")

    model = commands.add_parser("model", help="model tasks")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="TASK")
    tiny = model_commands.add_parser("create-tiny", help="write a tiny random model for smoke tests")
    tiny.add_argument("directory", type=Path)

    moderation = commands.add_parser("moderation", help="safety tools for moderators")
    moderation_commands = moderation.add_subparsers(dest="moderation_command", required=True, metavar="TASK")
    check = moderation_commands.add_parser(
        "check", help="run the prompt gate on prompts from stdin, one per line; print one JSON object per line"
    )
    check.add_argument("--guild", help="use this server's policy (default: the default policy)")
    check.add_argument("--nsfw-channel", action="store_true", help="as if asked in an age-restricted channel")

    provenance = commands.add_parser("provenance", help="provenance marks on images")
    provenance_commands = provenance.add_subparsers(dest="provenance_command", required=True, metavar="TASK")
    verify = provenance_commands.add_parser(
        "verify", help="say whether FILE carries imagine's mark (exit 0) or not (exit 1)"
    )
    verify.add_argument("file", type=Path)

    config = commands.add_parser("config", help="show the settings in effect (secrets hidden)")
    config.add_argument("--list", action="store_true", help="list every setting and its environment variable")
    return parser


def _configure_logging(settings: Settings, process: str) -> None:
    from bot import logs

    logs.configure(settings, process)


def _hide_progress_bars() -> None:
    """Loading bars from diffusers and transformers garble log files; our own log lines say the same."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]


def cmd_generate(settings: Settings, args: argparse.Namespace) -> int:
    from engine.registry import ModelSpec

    name = args.model or settings.model
    model_spec = next((m for m in settings.registry if m.name == name), None) or ModelSpec(name=name, source=name)
    width, height = args.size if args.size else (None, None)
    spec = GenerationSpec(
        prompt=args.prompt,
        negative_prompt=args.negative,
        seed=random_seed() if args.seed is None else args.seed,
        count=args.count,
        steps=args.steps,
        width=width,
        height=height,
        guidance_scale=args.guidance,
        style=args.style,
        style_strength=args.style_strength,
    )
    limits = model_spec.limits(settings.limits)
    limits.check(spec)  # before any model is loaded: bad input never reaches the GPU

    from engine.pipeline import generate, load_model_spec
    from engine.styles import StyleLibrary

    styles = StyleLibrary(settings.styles_dir)
    if spec.style is not None:
        styles.check(spec.style, spec.style_strength)
    _hide_progress_bars()
    model = load_model_spec(model_spec, settings.engine_options())
    started = time.monotonic()
    images = generate(model, spec, limits=limits, styles=styles)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for image in images:
        path = args.out / f"imagine-{stamp}-{image.seed}.png"
        path.write_bytes(image.png)
        print(path)
    print(f"{len(images)} image(s) in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


def cmd_engine(settings: Settings, args: argparse.Namespace) -> int:
    from engine.queue import open_queue
    from engine.service import run_engine

    _hide_progress_bars()
    queue = open_queue(
        settings.queue_url,
        local_path=settings.queue_path,
        lease_seconds=settings.engine.lease_seconds,
        max_attempts=settings.engine.max_attempts,
    )
    try:
        run_engine(
            queue,
            registry=settings.registry,
            options=settings.engine_options(),
            limits=settings.limits,
            worker_id=args.worker_id or socket.gethostname(),
            heartbeat_seconds=settings.engine.heartbeat_seconds,
            served=[m.strip() for m in args.models.split(",") if m.strip()] if args.models else None,
            burst=args.burst,
        )
    finally:
        queue.close()
    return 0


def _hide_password(url: str) -> str:
    return re.sub(r"//([^:/@]*):[^@]*@", r"//\1:***@", url)


def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    if args.list:
        for where, env, accepts in describe_options():
            print(f"{where:38} {env:38} {accepts}")
        return 0
    print(f"config file     {settings.source or '(none)'}")
    print(f"model           {settings.model}")
    print(f"data_dir        {settings.data_dir}")
    print(f"database_url    {_hide_password(settings.database_url)}")
    print(f"queue_url       {_hide_password(settings.queue_url)}")
    print(f"discord token   {'set' if settings.discord.token else 'NOT SET'}")
    print(f"discord api     {settings.discord.api_url}")
    print(f"discord gateway {settings.discord.gateway_url}")
    return 0


def cmd_moderation_check(settings: Settings, args: argparse.Namespace) -> int:
    import json

    from bot.safety import build_prompt_gate
    from moderation import check_lines

    gate = build_prompt_gate(settings)
    policy = settings.policies.for_channel(args.guild, nsfw_channel=args.nsfw_channel)
    for result in check_lines(sys.stdin, gate, policy):
        print(json.dumps(result, ensure_ascii=False), flush=True)
    return 0


def cmd_provenance_verify(args: argparse.Namespace) -> int:
    from moderation.provenance import ProvenanceError, describe, verify

    try:
        data = args.file.read_bytes()
    except OSError as error:
        raise UsageError(f"cannot read {args.file}: {error.strerror}") from None
    try:
        report = verify(data)
    except ProvenanceError as error:
        raise UsageError(f"{args.file}: {error}") from None
    print(describe(report))
    return 0 if report.marked else 1


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "generate":
        return cmd_generate(settings, args)
    if args.command == "model":
        from engine.tiny import create_tiny_pipeline

        print(create_tiny_pipeline(args.directory))
        return 0
    if args.command == "config":
        return cmd_config(settings, args)
    if args.command == "moderation":
        return cmd_moderation_check(settings, args)
    if args.command == "provenance":
        return cmd_provenance_verify(args)
    if args.command == "db":
        from bot.db.migrate import connect, current_revision, upgrade

        database = connect(settings.database_url)
        upgrade(database)
        print(f"database is at revision {current_revision(database)}")
        database.dispose()
        return 0
    _configure_logging(settings, args.command)
    if args.command == "engine":
        return cmd_engine(settings, args)
    from bot.service import serve

    settings.discord.require_token()
    asyncio.run(serve(settings, with_engine=args.command == "run"))
    return 0


def _quiet_libraries() -> None:
    # The ML libraries print progress bars and advice (e.g. about torchvision) that read like faults.
    for name in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        settings = load_settings(find_config_file(args.config, os.environ))
        return dispatch(args, settings)
    except InvalidRequest as error:
        print(f"imagine: {error.message}", file=sys.stderr)
        return 2
    except (ImagineError, EngineError) as error:
        print(f"imagine: {error}", file=sys.stderr)
        return error.exit_code if isinstance(error, ImagineError) else 1
    except KeyboardInterrupt:
        return 130
