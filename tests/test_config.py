from pathlib import Path

import pytest

from bot.config import DEFAULT_API_URL, DEFAULT_GATEWAY_URL, DEFAULT_MODEL, Secret, load_settings
from bot.errors import ConfigError


def test_defaults_need_no_file(tmp_path: Path) -> None:
    settings = load_settings(None, {"IMAGINE_DATA_DIR": str(tmp_path)})
    assert settings.model == DEFAULT_MODEL
    assert settings.discord.api_url == DEFAULT_API_URL
    assert settings.discord.gateway_url == DEFAULT_GATEWAY_URL
    assert settings.queue_url == "local"
    assert settings.database_url == f"sqlite:///{tmp_path / 'imagine.sqlite3'}"
    assert settings.discord.token is None


def test_environment_overrides_file(tmp_path: Path) -> None:
    config = tmp_path / "imagine.toml"
    config.write_text(
        'model = "from-file"\nqueue_url = "local"\n[discord]\napi_url = "http://file.example/api"\n'
        "[limits]\nmax_steps = 20\n"
    )
    settings = load_settings(
        config,
        {
            "IMAGINE_MODEL": "/models/mine",
            "IMAGINE_DISCORD_TOKEN": "abc.def.ghi-secret",
            "IMAGINE_DISCORD_GATEWAY_URL": "ws://127.0.0.1:9/",
            "IMAGINE_DATABASE_URL": "postgresql://u@h/db",
            "IMAGINE_LIMITS_MAX_COUNT": "2",
        },
    )
    assert settings.model == "/models/mine"
    assert settings.discord.api_url == "http://file.example/api"
    assert settings.discord.gateway_url == "ws://127.0.0.1:9/"
    assert settings.database_url == "postgresql://u@h/db"
    assert settings.limits.max_steps == 20
    assert settings.limits.max_count == 2
    assert settings.discord.token == Secret("abc.def.ghi-secret")


def test_token_never_shows_in_repr() -> None:
    settings = load_settings(None, {"IMAGINE_DISCORD_TOKEN": "very-secret-token-value"})
    assert "very-secret-token-value" not in repr(settings)
    assert "very-secret-token-value" not in str(settings.discord)
    assert settings.discord.require_token().reveal() == "very-secret-token-value"


def test_missing_token_names_the_setting() -> None:
    settings = load_settings(None, {})
    with pytest.raises(ConfigError, match="IMAGINE_DISCORD_TOKEN"):
        settings.discord.require_token()


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("IMAGINE_DISCORD_API_URL", "not a url", "IMAGINE_DISCORD_API_URL"),
        ("IMAGINE_DISCORD_GATEWAY_URL", "http://wrong-scheme/", "ws"),
        ("IMAGINE_QUEUE_URL", "amqp://x", "redis://"),
        ("IMAGINE_DATABASE_URL", "mysql://x/y", "postgresql"),
        ("IMAGINE_LIMITS_MAX_STEPS", "many", "whole number"),
        ("IMAGINE_BOT_MAX_JOBS_PER_USER", "0", "at least 1"),
        ("IMAGINE_ENGINE_DEVICE", "tpu", "cuda"),
    ],
)
def test_bad_values_name_the_setting(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {name: value})
    assert name in str(caught.value)
    assert expected in str(caught.value)


def test_bad_token_value_is_not_echoed(tmp_path: Path) -> None:
    config = tmp_path / "imagine.toml"
    config.write_text("[discord]\ntoken = 12345\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {})
    assert "12345" not in str(caught.value)
    assert "token" in str(caught.value)


def test_unknown_setting_in_file_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "imagine.toml"
    config.write_text("[limits]\nmax_stepz = 4\n")
    with pytest.raises(ConfigError, match="max_stepz"):
        load_settings(config, {})


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("model = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken, {})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", {})


def test_image_thresholds_from_a_table_in_the_file(tmp_path: Path) -> None:
    config = tmp_path / "imagine.toml"
    config.write_text(
        '[safety]\nimage_action = "block"\n'
        '[safety.image_thresholds]\n"violence/graphic" = 0.8\nFEMALE_BREAST_EXPOSED = 0.6\nnormal = "off"\nx = 1\n'
    )
    settings = load_settings(config, {})
    assert settings.safety.image_action == "block"
    assert settings.safety.image_thresholds == {
        "violence/graphic": 0.8,
        "FEMALE_BREAST_EXPOSED": 0.6,
        "normal": None,
        "x": 1.0,
    }
    assert load_settings(None, {}).safety.image_thresholds == {}


def test_image_thresholds_from_the_environment_replace_the_files(tmp_path: Path) -> None:
    config = tmp_path / "imagine.toml"
    config.write_text('[safety.image_thresholds]\n"violence/graphic" = 0.8\n')
    settings = load_settings(config, {"IMAGINE_SAFETY_IMAGE_THRESHOLDS": " hate=0.9, normal=OFF ,"})
    assert settings.safety.image_thresholds == {"hate": 0.9, "normal": None}


@pytest.mark.parametrize(
    ("toml", "env", "names"),
    [
        ('"violence/graphic" = 1.5', None, "'violence/graphic' = 1.5"),
        ("ANUS_EXPOSED = 0", None, "'ANUS_EXPOSED' = 0"),
        ('ANUS_EXPOSED = "high"', None, "'ANUS_EXPOSED' = 'high'"),
        ("ANUS_EXPOSED = true", None, "'ANUS_EXPOSED' = True"),
        (None, "hate=0.9,violence/graphic", "'violence/graphic' = ''"),
        (None, "hate=-1", "'hate' = '-1'"),
        (None, "=0.5", "'' = '0.5'"),
    ],
)
def test_bad_image_thresholds_name_the_option_the_label_and_what_is_accepted(
    tmp_path: Path, toml: str | None, env: str | None, names: str
) -> None:
    config = tmp_path / "imagine.toml"
    config.write_text(f"[safety.image_thresholds]\n{toml}\n" if toml else "")
    with pytest.raises(ConfigError) as caught:
        load_settings(config, {"IMAGINE_SAFETY_IMAGE_THRESHOLDS": env} if env else {})
    message = str(caught.value)
    assert ("IMAGINE_SAFETY_IMAGE_THRESHOLDS" if env else "[safety] image_thresholds") in message
    assert names in message
    assert "expected a label with a threshold above 0 and at most 1, or `off`" in message


def test_image_thresholds_must_be_a_table(tmp_path: Path) -> None:
    config = tmp_path / "imagine.toml"
    config.write_text("[safety]\nimage_thresholds = 0.5\n")
    with pytest.raises(ConfigError, match=r"\[safety\] image_thresholds = 0.5 is not valid"):
        load_settings(config, {})


def test_the_image_gate_gets_the_configured_thresholds(tmp_path: Path) -> None:
    from bot.safety import build_finisher
    from moderation.image_gate import DEFAULT_THRESHOLD, ImageGate

    config = tmp_path / "imagine.toml"
    config.write_text(
        '[safety]\nimage_classifiers = ["moderation.image_gate:NullClassifier"]\n'
        '[safety.image_thresholds]\n"violence/graphic" = 0.8\nANUS_EXPOSED = 0.9\n'
    )
    gate = build_finisher(load_settings(config, {"IMAGINE_DATA_DIR": str(tmp_path)})).gate
    assert isinstance(gate, ImageGate)
    assert gate.threshold("violence/graphic") == 0.8
    assert gate.threshold("ANUS_EXPOSED") == 0.9
    assert gate.threshold("self-harm") == DEFAULT_THRESHOLD


def test_readme_lists_every_setting() -> None:
    from bot.config import describe_options

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [env for _, env, _ in describe_options() if f"`{env}`" not in readme]
    assert missing == []
