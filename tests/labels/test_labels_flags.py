"""Every flag of `skyfill labels` (LabelsConfig), declared once on its field, reaches
`--help` with its SKYFILL_* variable, its `--config` YAML key and the README's table; and
the bad invocations are one line."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from skyfill.cli.dataclass_options import dataclass_options, from_options, param_name
from skyfill.cli.labels import labels
from skyfill.cli.options import config_option, with_env_vars
from skyfill.firehose.config import FirehoseConfig
from skyfill.flags import flag_fields
from skyfill.labels.config import LabelsConfig
from tests.helpers import assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parents[2]
FLAGS = flag_fields(LabelsConfig)
SAMPLES: dict[str, tuple[str, str, Any]] = {
    "from_labelers": ("https://b.example", "[https://b.example]", ["https://b.example"]),
    "sink": ("sqlite:////tmp/l.db", "sqlite:////tmp/l.db", "sqlite:////tmp/l.db"),
    "stream_id": ("mine", "mine", "mine"),
    "cursor": ("12", "12", 12),
    "until_live": ("true", "true", True),
    "plc_url": ("https://plc.example", "https://plc.example", "https://plc.example"),
    "batch_size": ("7", "7", 7),
    "flush_seconds": ("0.5", "0.5", 0.5),
    "allow_private_network": ("true", "true", True),
}
MADE: list[LabelsConfig] = []


@click.command()
@config_option
@dataclass_options(LabelsConfig)
def probe(**options: Any) -> None:
    MADE.append(from_options(LabelsConfig, options))


with_env_vars(probe)


def _made(args: list[str], env: dict[str, str], field: str) -> Any:
    base = [] if field == "from_labelers" else ["--from-labeler", "https://a.example"]
    base += [] if field == "sink" else ["--sink", "sqlite:////tmp/x.db"]
    result = CliRunner().invoke(probe, [*base, *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return getattr(MADE.pop(), field)


def test_every_flag_has_a_sample_that_is_not_its_default() -> None:
    assert set(SAMPLES) == {item.name for item, _ in FLAGS}
    for item, _ in FLAGS:
        default = item.default_factory() if callable(item.default_factory) else item.default
        assert SAMPLES[item.name][2] != default


@pytest.mark.parametrize(("item", "spec"), FLAGS, ids=[spec.name for _, spec in FLAGS])
def test_every_flag_is_in_help_the_environment_yaml_and_the_readme(
    item: dataclasses.Field, spec: Any, tmp_path: Path
) -> None:
    option = next(p for p in labels.params if p.name == param_name(spec))
    assert option.envvar == f"SKYFILL_{param_name(spec).upper()}"
    text, yaml_text, value = SAMPLES[item.name]
    env = {f"SKYFILL_{param_name(spec).upper()}": text}
    assert _made([], env, item.name) == value
    config = tmp_path / "labels.yaml"
    config.write_text(f"{param_name(spec)}: {yaml_text}\n")
    assert _made(["--config", str(config)], {}, item.name) == value
    readme = (REPO / "README.md").read_text()
    assert re.search(rf"^\| `--{spec.name}[ `]", readme, re.MULTILINE), f"README: --{spec.name}"


def test_the_firehose_labels_flag_is_in_the_readme() -> None:
    (spec,) = [spec for item, spec in flag_fields(FirehoseConfig) if item.name == "labels"]
    assert f"`--{spec.name} URL`" in (REPO / "README.md").read_text()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "give a labeler to follow"),
        (["--from-labeler", "wss://x.example"], "from-labeler must be an http(s) URL"),
        (["--from-labeler", "https://x.example"], "give a sink"),
        (["--from-labeler", "https://x.example", "--sink", "mysql://x"], "is not a sink"),
    ],
)
def test_bad_invocations_are_one_line(args: list[str], needle: str, tmp_path: Path) -> None:
    done = run_cli("labels", *args, "--workdir", str(tmp_path))
    assert_one_line_error(done, 2, needle)
