"""The command line as a newcomer meets it: --config anywhere, help on every command and argument."""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest

from citadel_proxy.cli import main, parser


def every_parser(root: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(root.prog, root)]
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += every_parser(sub)
    return found


def test_every_command_and_argument_has_help() -> None:
    missing = []
    for prog, command in every_parser(parser()):
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                missing += [f"{prog} {c.dest}" for c in action._choices_actions if not c.help]
            elif not action.help:
                missing.append(f"{prog} {action.dest}")
    assert missing == []


def test_serve_help_names_the_default_server() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        parser().parse_args(["--help"])
    assert "start the gateway (uvicorn" in out.getvalue()


def test_keys_alone_names_the_actions_not_an_internal_name() -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit):
        parser().parse_args(["keys"])
    assert "keys_action" not in err.getvalue() and "{create,list,revoke,hash}" in err.getvalue()


@pytest.mark.parametrize(
    "words",
    [
        ["keys", "create", "my-app", "--config", "{file}"],
        ["keys", "--config", "{file}", "create", "my-app"],
        ["--config", "{file}", "keys", "create", "my-app"],
    ],
    ids=["after", "between", "before"],
)
def test_config_is_accepted_before_and_after_a_subcommand(
    tmp_path: Path, words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "citadel.yaml"
    config.write_text(f"paths: {{data: {tmp_path / 'data'}}}\n")
    assert main([w.replace("{file}", str(config)) for w in words]) == 0
    assert capsys.readouterr().out.startswith("cit_")
    assert (tmp_path / "data").is_dir()
