"""The `imagine` command line, run as a real subprocess."""

import subprocess
import sys
from pathlib import Path

import pytest
from bot_process import IMAGINE, imagine_env

from engine.jobs import GenerationSpec, Job
from engine.metadata import read_png_metadata
from engine.queue import LocalQueue


def imagine(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IMAGINE, *args], env=imagine_env(env or {}), capture_output=True, text=True, timeout=timeout, check=False
    )


def test_create_tiny_then_generate_writes_pngs(tmp_path: Path) -> None:
    model = tmp_path / "tiny"
    made = imagine("model", "create-tiny", str(model))
    assert made.returncode == 0, made.stderr
    assert (model / "model_index.json").is_file()

    out = tmp_path / "out"
    result = imagine(
        "generate",
        "a blue sphere",
        "--model",
        str(model),
        "--out",
        str(out),
        "--seed",
        "3",
        "--count",
        "2",
        "--negative",
        "noise",
        "--size",
        "64x96",
        "--steps",
        "2",
    )
    assert result.returncode == 0, result.stderr
    paths = [Path(line) for line in result.stdout.splitlines()]
    assert len(paths) == 2
    assert sorted(p.parent for p in paths) == [out, out]
    metas = [read_png_metadata(p.read_bytes()) for p in paths]
    assert [m["seed"] for m in metas] == ["3", "4"]
    assert {m["prompt"] for m in metas} == {"a blue sphere"}
    assert {m["negative_prompt"] for m in metas} == {"noise"}
    assert {m["steps"] for m in metas} == {"2"}
    assert "Size: 64x96" in metas[0]["parameters"]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--seed", "abc"], "seed must be a whole number from 0 to 4294967295"),
        (["--seed", "-4"], "seed must be a whole number from 0 to 4294967295"),
        (["--count", "5"], "count must be between 1 and 4"),
        (["--count", "0"], "count must be between 1 and 4"),
        (["--count", "two"], "count must be a whole number"),
        (["--steps", "0"], "steps must be between 1 and 50"),
        (["--steps", "500"], "steps must be between 1 and 50"),
        (["--size", "100x100"], "multiple of 8"),
        (["--size", "4096x512"], "between 64 and 1024"),
        (["--size", "big"], "size must look like 512x512"),
    ],
)
def test_bad_generate_options_get_one_clear_line(tmp_path: Path, args: list[str], says: str) -> None:
    result = imagine("generate", "a cat", "--model", str(tmp_path / "never-loaded"), "--out", str(tmp_path), *args)
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(("prompt", "says"), [("  ", "prompt is empty"), ("x" * 1001, "limit is 1000")])
def test_bad_prompts_are_refused_before_loading(tmp_path: Path, prompt: str, says: str) -> None:
    result = imagine("generate", prompt, "--model", str(tmp_path / "never-loaded"), "--out", str(tmp_path))
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_model_is_one_line(tmp_path: Path) -> None:
    result = imagine("generate", "a cat", "--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path))
    assert result.returncode == 1
    assert "no-such-model" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_without_token_exits_2(tmp_path: Path) -> None:
    result = imagine("run", env={"IMAGINE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "IMAGINE_DISCORD_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_setting_exits_2_and_names_it(tmp_path: Path) -> None:
    result = imagine("bot", env={"IMAGINE_DISCORD_TOKEN": "x" * 30, "IMAGINE_DISCORD_API_URL": "nope"})
    assert result.returncode == 2
    assert "IMAGINE_DISCORD_API_URL" in result.stderr
    assert "x" * 30 not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_config_never_prints_the_token(tmp_path: Path) -> None:
    # Shaped like a real bot token (three dot-separated parts), assembled so no scanner mistakes it for one.
    secret = ".".join(["MTIzNDU2Nzg5MDEyMzQ1Njc4", "secret", "token-value-that-must-not-leak"])
    result = imagine("config", env={"IMAGINE_DISCORD_TOKEN": secret, "IMAGINE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0
    assert "discord token   set" in result.stdout
    assert secret not in result.stdout + result.stderr


def test_db_upgrade(tmp_path: Path) -> None:
    result = imagine("db", "upgrade", env={"IMAGINE_DATA_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "revision 0005" in result.stdout
    assert (tmp_path / "imagine.sqlite3").is_file()


def test_engine_burst_runs_a_job_without_importing_discord(tmp_path: Path, tiny_model_dir: Path) -> None:
    queue = LocalQueue(tmp_path / "queue.sqlite3")
    queue.submit(Job(id="j1", model=str(tiny_model_dir), spec=GenerationSpec(prompt="a cube", seed=11, count=1)))
    script = (
        "import sys\n"
        "from bot.cli import main\n"
        "code = main(['engine', '--burst', '--worker-id', 'test-engine'])\n"
        "assert 'discord' not in sys.modules, 'the engine imported discord'\n"
        "sys.exit(code)\n"
    )
    env = imagine_env({"IMAGINE_DATA_DIR": str(tmp_path), "IMAGINE_MODEL": str(tiny_model_dir)})
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (*_, (_, done)) = queue.events("j1")
    assert done.kind == "done"
    assert done.worker == "test-engine"
    (image,) = done.images
    assert read_png_metadata(image.png)["seed"] == "11"
    queue.close()


def test_moderation_check_prints_one_json_object_per_prompt() -> None:
    import json

    result = subprocess.run(
        [IMAGINE, "moderation", "check"],
        input="a lighthouse at dusk\n\nn.u.d.e portrait\nScunthorpe castle\n",
        env=imagine_env({}),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [row["prompt"] for row in rows] == ["a lighthouse at dusk", "n.u.d.e portrait", "Scunthorpe castle"]
    assert [row["allowed"] for row in rows] == [True, False, True]
    assert rows[1]["category"] == "sexual"
    for row in rows:
        assert {"prompt", "allowed", "category", "layer", "score"} <= set(row)
        assert isinstance(row["score"], float)


def test_provenance_verify_tells_marked_from_unmarked(tmp_path: Path) -> None:
    import io

    from PIL import Image

    from moderation.provenance import mark

    buffer = io.BytesIO()
    Image.effect_noise((512, 512), 40).convert("RGB").save(buffer, format="PNG")
    plain = tmp_path / "plain.png"
    plain.write_bytes(buffer.getvalue())
    marked = tmp_path / "marked.png"
    marked.write_bytes(mark(buffer.getvalue(), job_id="0123456789abcdef0123456789abcdef", model="tiny"))
    jpeg = tmp_path / "marked.jpg"
    with Image.open(marked) as image:
        image.convert("RGB").save(jpeg, format="JPEG", quality=75)

    found = imagine("provenance", "verify", str(marked))
    assert found.returncode == 0, found.stdout + found.stderr
    assert "01234567" in found.stdout
    assert imagine("provenance", "verify", str(jpeg)).returncode == 0  # the watermark survives JPEG
    not_found = imagine("provenance", "verify", str(plain))
    assert not_found.returncode == 1
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    refused = imagine("provenance", "verify", str(not_an_image))
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr


def test_demo_dataset_and_a_full_training_run(tmp_path: Path) -> None:
    data = tmp_path / "shapes"
    written = imagine("demo", "dataset", str(data), "--count", "12", "--seed", "4")
    assert written.returncode == 0, written.stderr
    captions = sorted(data.glob("*.txt"))
    assert len(captions) == 12
    assert len(list(data.glob("*.png"))) == 12
    again = imagine("demo", "dataset", str(tmp_path / "again"), "--count", "12", "--seed", "4")
    assert again.returncode == 0
    assert [c.read_text() for c in captions] == [c.read_text() for c in sorted((tmp_path / "again").glob("*.txt"))]

    out = tmp_path / "run"
    env = {"OMP_NUM_THREADS": "1"}
    trained = imagine("train", str(data), "--full", "--output", str(out), "--steps", "2", "--batch-size", "4", env=env)
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.strip() == str(out / "model")
    assert "step 2/2" in trained.stderr
    resumed = imagine("train", str(data), "--full", "--output", str(out), "--steps", "3", "--resume", "latest", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "step 3/3" in resumed.stderr

    mixed = imagine("train", str(data), "--full", "--base", "tiny", "--output", str(out), "--steps", "1")
    assert mixed.returncode == 2
    assert "leave out --base" in mixed.stderr
    no_base = imagine("train", str(data), "--output", str(out), "--steps", "1")
    assert no_base.returncode == 2
    assert "--base is required" in no_base.stderr
