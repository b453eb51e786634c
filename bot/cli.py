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
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.config import Settings, describe_options, find_config_file, load_settings
from bot.errors import ImagineError, UsageError
from engine.errors import EngineError, InvalidRequest
from engine.jobs import MAX_SEED, GenerationSpec, random_seed

if TYPE_CHECKING:
    from engine.training import TrainConfig
    from moderation.audit import AuditEntry, AuditLog


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


def _number(name: str) -> type[float]:
    def parse(value: str) -> float:
        try:
            return float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number (got {value!r})") from None

    parse.__name__ = name
    return parse  # type: ignore[return-value]


def _add_train_parser(commands: Any) -> None:
    train = commands.add_parser(
        "train", help="fine-tune a LoRA on your own images, to serve as a style (or, with --full, train the demo model)"
    )
    train.add_argument("data", type=Path, help="image folder: .txt captions, metadata.jsonl, or --instance-prompt")
    train.add_argument("--base", metavar="MODEL", help="model to train on (hub id, folder, name); required for a LoRA")
    train.add_argument(
        "--full", action="store_true", help="train the demo architecture from scratch (whole model, not a LoRA)"
    )
    train.add_argument("--output", required=True, type=Path, metavar="OUT", help="folder for the LoRA and more")
    train.add_argument("--steps", required=True, type=_whole("steps"), help="optimiser steps")
    train.add_argument("--rank", type=_whole("rank"), default=16, help="LoRA rank (default 16)")
    train.add_argument("--alpha", type=_number("alpha"), help="LoRA alpha (default: the rank)")
    train.add_argument(
        "--learning-rate", type=_number("learning rate"), help="(default 1e-4 for a LoRA, 5e-4 with --full)"
    )
    train.add_argument("--lr-schedule", choices=("constant", "cosine", "linear"), default="constant")
    train.add_argument("--warmup-steps", type=_whole("warmup steps"), default=0)
    train.add_argument("--batch-size", type=_whole("batch size"), help="(default 1 for a LoRA, 32 with --full)")
    train.add_argument("--gradient-accumulation", type=_whole("gradient accumulation"), default=1)
    train.add_argument(
        "--resolution",
        type=_whole("resolution"),
        help="pixels (default 512; 32, the only size it takes, for the demo model)",
    )
    train.add_argument("--crop", choices=("center", "random"), default="center")
    train.add_argument("--buckets", action="store_true", help="group images by aspect ratio instead of square crops")
    train.add_argument("--flip", action="store_true", help="mirror half the images at random")
    train.add_argument("--caption-dropout", type=_number("caption dropout"), default=0.0, metavar="P")
    train.add_argument("--min-snr-gamma", type=_number("min-SNR gamma"), metavar="G", help="e.g. 5")
    train.add_argument("--noise-offset", type=_number("noise offset"), default=0.0, help="e.g. 0.05")
    train.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no", help="GPU only")
    train.add_argument("--gradient-checkpointing", action="store_true", help="less memory, slower steps")
    train.add_argument("--seed", type=_seed, default=0)
    train.add_argument("--instance-prompt", metavar="TEXT", help="one caption for every image (DreamBooth)")
    train.add_argument("--class-prompt", metavar="TEXT", help="prior preservation: the class, e.g. 'a dog'")
    train.add_argument("--class-data", type=Path, metavar="DIR", help="class images (made by the model if short)")
    train.add_argument("--num-class-images", type=_whole("number of class images"), default=100)
    train.add_argument("--prior-loss-weight", type=_number("prior loss weight"), default=1.0)
    train.add_argument("--validation-prompt", action="append", default=[], metavar="TEXT", help="repeatable")
    train.add_argument("--validation-every", type=_whole("validation interval"), metavar="K")
    train.add_argument("--checkpoint-every", type=_whole("checkpoint interval"), metavar="K")
    train.add_argument("--resume", metavar="CHECKPOINT", help="a checkpoint folder, or latest")
    train.add_argument("--kohya", action="store_true", help="also write a kohya-format file")
    train.add_argument("--style", metavar="NAME", help="also install the result in the styles folder as NAME")


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
    generate.add_argument("--lora", type=Path, metavar="PATH", help="a LoRA file, or an `imagine train` output folder")
    generate.add_argument(
        "--lora-scale", type=float, default=1.0, metavar="S", help="LoRA strength, 0 to 2 (default 1)"
    )
    _add_train_parser(commands)
    demo = commands.add_parser("demo", help="the demo model's procedural dataset")
    demo_commands = demo.add_subparsers(dest="demo_command", required=True, metavar="TASK")
    dataset = demo_commands.add_parser("dataset", help="write shapes on backgrounds with captions")
    dataset.add_argument("out", type=Path, metavar="OUT", help="folder to write into")
    dataset.add_argument("--count", type=_whole("count"), required=True, help="number of images")
    dataset.add_argument("--seed", type=_seed, default=0, help="the same seed writes the same dataset (default 0)")

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

    audit = commands.add_parser("audit", help="the moderators' tamper-evident audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True, metavar="TASK")
    audit_commands.add_parser(
        "verify", help="check every entry's hash and link (exit 0), or name the first bad entry (exit 1)"
    )
    show = audit_commands.add_parser("show", help="print entries, oldest first")
    show.add_argument(
        "--user", metavar="ID", help="entries where this member is the subject or the actor (e.g. a moderator's bans)"
    )
    show.add_argument("--guild", metavar="ID", help="entries from this server")
    show.add_argument("--job", metavar="ID", help="entries about this job")
    show.add_argument("--category", metavar="C", help="entries with this category (e.g. sexual)")
    show.add_argument("--event", metavar="E", help="entries of this event (e.g. mod.ban)")
    show.add_argument("--since", metavar="ISO", help="from this time on (inclusive; UTC unless an offset is given)")
    show.add_argument("--until", metavar="ISO", help="before this time (exclusive; UTC unless an offset is given)")
    show.add_argument("--limit", metavar="N", help="only the newest N entries")
    show.add_argument("--format", choices=("table", "jsonl", "csv"), default="table", help="(default: table)")

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


def _check_lora(args: argparse.Namespace) -> None:
    from engine.training import TrainingUsageError
    from engine.training.export import lora_file

    if args.style is not None:
        raise UsageError("use --style or --lora, not both")
    if not 0 <= args.lora_scale <= 2:
        raise UsageError(f"--lora-scale must be from 0 to 2 (got {args.lora_scale})")
    try:
        lora_file(args.lora)
    except TrainingUsageError as error:
        raise UsageError(str(error)) from error


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
    if args.lora is not None:
        _check_lora(args)
    from bot.safety import build_marker
    from engine.jobs import new_job_id

    mark = build_marker(settings)  # before the model loads: unusable C2PA credentials fail fast
    _hide_progress_bars()
    model = load_model_spec(model_spec, settings.engine_options())
    if args.lora is not None:
        from engine.training.export import apply_lora

        apply_lora(model, args.lora, args.lora_scale)
    started = time.monotonic()
    images = generate(model, spec, limits=limits, styles=styles)
    job_id = new_job_id()  # one job, as the bot records one request, so the marks lead back to this run
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for image in images:
        path = args.out / f"imagine-{stamp}-{image.seed}.png"
        path.write_bytes(mark(image.png, job_id, model_spec.name))
        print(path)
    print(f"{len(images)} image(s) in {time.monotonic() - started:.1f}s, job {job_id}", file=sys.stderr)
    return 0


def cmd_train_full(settings: Settings, args: argparse.Namespace) -> int:
    """The demo model's recipe: the whole pixel-space pipeline trained from scratch, resumable."""
    if args.base is not None:
        raise UsageError("--full trains the demo architecture from scratch: leave out --base.")
    if args.style is not None:
        raise UsageError("--style applies to LoRA training; leave it out with --full")
    from engine.demo import DEMO_MODEL
    from engine.training import TrainingUsageError

    config = _train_config(settings, args, base=DEMO_MODEL, batch_size=32, learning_rate=5e-4)
    try:
        config.check_full()
    except TrainingUsageError as error:
        raise UsageError(str(error)) from None
    if not args.data.is_dir():
        raise UsageError(f"{args.data} is not a folder: make one with `imagine demo dataset {args.data} --count N`.")
    from engine.demo.pipeline import PIXELS
    from engine.demo.train_full import train_full

    resume = None
    if args.resume is not None:
        resume = args.output if args.resume == "latest" else Path(args.resume)
    try:
        result = train_full(
            args.data,
            args.output,
            steps=config.steps,
            batch_size=config.batch_size,
            resolution=PIXELS if args.resolution is None else args.resolution,
            seed=config.seed,
            resume=resume,
            learning_rate=config.learning_rate,
            checkpoint_every=250 if config.checkpoint_every is None else config.checkpoint_every,
            on_log=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except (ValueError, FileNotFoundError) as error:
        raise UsageError(str(error)) from None
    print(result.model)
    return 0


def cmd_demo_dataset(args: argparse.Namespace) -> int:
    from engine.demo.dataset import write_dataset

    try:
        samples = write_dataset(args.out, args.count, args.seed)
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(f"{len(samples)} images with captions in {args.out}")
    return 0


def _train_config(
    settings: Settings,
    args: argparse.Namespace,
    *,
    base: str,
    batch_size: int,
    learning_rate: float,
    resolution: int = 512,
) -> TrainConfig:
    """`imagine train`'s options as a `TrainConfig`; `batch_size` and `learning_rate` are this mode's defaults.
    Options the user left out are None here, so a 0 they gave reaches the checks instead of becoming a default."""
    from engine.training import TrainConfig

    return TrainConfig(
        data=args.data,
        base=base,
        output=args.output,
        steps=args.steps,
        rank=args.rank,
        alpha=args.alpha,
        learning_rate=learning_rate if args.learning_rate is None else args.learning_rate,
        lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps,
        batch_size=batch_size if args.batch_size is None else args.batch_size,
        gradient_accumulation=args.gradient_accumulation,
        resolution=resolution if args.resolution is None else args.resolution,
        crop=args.crop,
        buckets=args.buckets,
        flip=args.flip,
        caption_dropout=args.caption_dropout,
        min_snr_gamma=args.min_snr_gamma,
        noise_offset=args.noise_offset,
        mixed_precision=args.mixed_precision,
        gradient_checkpointing=args.gradient_checkpointing,
        seed=args.seed,
        instance_prompt=args.instance_prompt,
        class_prompt=args.class_prompt,
        class_data=args.class_data,
        num_class_images=args.num_class_images,
        prior_loss_weight=args.prior_loss_weight,
        validation_prompts=args.validation_prompt,
        validation_every=args.validation_every,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
        kohya=args.kohya,
        device=settings.engine.device,
    )


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    if args.full:
        return cmd_train_full(settings, args)
    if args.base is None:
        raise UsageError("--base is required: the model to fine-tune (a configured name, hub id or folder).")
    from engine.training import DatasetError, TrainingUsageError
    from engine.training.config import default_resolution

    spec = next((m for m in settings.registry if m.name == args.base), None)
    resolution = default_resolution(spec.source if spec is not None else args.base)  # 32 for the demo model
    config = _train_config(settings, args, base=args.base, batch_size=1, learning_rate=1e-4, resolution=resolution)
    try:
        config.check()  # options and data before torch is imported: a typo costs no wait
        from engine.training.dataset import load_examples

        examples = load_examples(
            config.data,
            resolution=config.resolution,
            instance_prompt=config.instance_prompt,
            batch_size=config.batch_size,
        )
        from engine.training.lora import prepare, train

        prepared = prepare(config, examples)
        _hide_progress_bars()
        result = train(config, spec=spec, prepared=prepared)
        if args.style is not None:
            from engine.training.export import register_style

            described = config.instance_prompt or f"trained on {config.data}"
            print(register_style(result.lora, settings.styles_dir, args.style, description=described))
    except (TrainingUsageError, DatasetError) as error:
        raise UsageError(str(error)) from error
    print(result.lora)
    if result.kohya is not None:
        print(result.kohya)
    print(
        f"trained to step {result.step} in {result.seconds:.0f}s; loss on fixed probe examples "
        f"{result.probe_before:.4f} -> {result.probe_after:.4f}",
        file=sys.stderr,
    )
    return 0


def cmd_engine(settings: Settings, args: argparse.Namespace) -> int:
    from engine.queue import open_queue
    from engine.service import run_engine

    _hide_progress_bars()
    _yield_cpu(settings.engine.nice)
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


def _yield_cpu(niceness: int) -> None:
    """Runs this process at `niceness` at least (it never raises its own priority, which needs privileges)."""
    if hasattr(os, "getpriority"):
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if niceness > current:
            os.nice(niceness - current)


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


def _audit_table(entries: Sequence[AuditEntry]) -> list[str]:
    import json

    header = ("id", "at (UTC)", "event", "actor", "user", "guild", "job", "category", "data")
    rows = [
        (
            str(entry.id),
            entry.at.strftime("%Y-%m-%d %H:%M:%S"),
            entry.event,
            *(value or "-" for value in (entry.actor_id, entry.user_id, entry.guild_id, entry.job_id, entry.category)),
            "[redacted]" if entry.redacted else json.dumps(entry.data, ensure_ascii=False, sort_keys=True),
        )
        for entry in entries
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in [header, *rows]
    ]


def _audit_time(option: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise UsageError(
            f"{option} must be an ISO date or time such as 2026-01-31 or 2026-01-31T18:00:00+01:00 (got {value!r})"
        ) from None


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _audit_limit(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        limit = int(value)
    except ValueError:
        limit = 0
    if limit < 1:
        raise UsageError(f"--limit must be a whole number of 1 or more (got {value!r})")
    return limit


def _audit_verify(log: AuditLog) -> int:
    result = log.verify()
    if not result.ok:
        print(f"audit log damaged at entry {result.first_bad_id}: {result.reason}")
        return 1
    print(f"audit log intact: {result.entries} entries")
    if result.last_hash:
        print(f"newest entry hash: {result.last_hash}")
    return 0


def _audit_filters(args: argparse.Namespace) -> dict[str, Any]:
    """`AuditLog.query` arguments from `imagine audit show`'s options; bad ones raise UsageError."""
    since, until = _audit_time("--since", args.since), _audit_time("--until", args.until)
    if since is not None and until is not None and _aware(since) >= _aware(until):
        raise UsageError("--since must be earlier than --until")
    return {
        "member_id": args.user,
        "guild_id": args.guild,
        "job_id": args.job,
        "category": args.category,
        "event": args.event,
        "since": since,
        "until": until,
        "limit": _audit_limit(args.limit),
    }


def _audit_show(log: AuditLog, filters: dict[str, Any], output: str) -> int:
    from moderation.audit import export_csv, export_jsonl

    entries = log.query(**filters)
    try:
        if output == "jsonl":
            export_jsonl(entries, sys.stdout)
        elif output == "csv":
            export_csv(entries, sys.stdout)
        elif entries:
            print("\n".join(_audit_table(entries)))
        else:
            print("no audit entries match", file=sys.stderr)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is caught below
    except BrokenPipeError:
        _stdout_closed()
    return 0


def _stdout_closed() -> None:
    """Whoever read our output stopped early (`| head`): that is no error. Python would still try to flush
    what is left in stdout at exit and print a second BrokenPipeError, so point stdout at devnull."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def cmd_audit(settings: Settings, args: argparse.Namespace) -> int:
    from bot.db.migrate import connect, upgrade
    from moderation.audit import AuditLog

    filters = _audit_filters(args) if args.audit_command == "show" else {}  # checked before the database opens
    database = connect(settings.database_url)
    try:
        upgrade(database)
        log = AuditLog(database)
        return _audit_verify(log) if args.audit_command == "verify" else _audit_show(log, filters, args.format)
    finally:
        database.dispose()


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "generate":
        return cmd_generate(settings, args)
    if args.command == "train":
        return cmd_train(settings, args)
    if args.command == "demo":
        return cmd_demo_dataset(args)
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
    if args.command == "audit":
        return cmd_audit(settings, args)
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
