"""The `vidtempo` command as a newcomer meets it: `--help` of every command and the read-only
commands answer without importing torch or Ray, and every command the README and docs/ show is
one the parser accepts (its `--help` answers; a complete line parses as written)."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PLACEHOLDERS = ("…", "...")


def subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every command path of the parser: (), ("zoo",), ("zoo", "list"), …"""
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, (*path, name))


# one process: every --help, then the read-only commands; what it imported, printed last
LIGHT = r"""
import contextlib, io, sys
from vidtempo import cli
from tests.test_cli import subcommands

paths = list(subcommands(cli.build_parser()))
for path in paths:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        cli.build_parser().parse_args([*path, "--help"])
for argv in (["zoo", "list"], ["zoo", "show", "tin_r50_1x1x8_40e_sthv1_rgb"],
             ["config", "validate", "tin_r18_synthetic"]):
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(argv) == 0, argv
print(len(paths), " ".join(m for m in ("torch", "ray", "mlflow") if m in sys.modules))
"""


def test_help_and_read_only_commands_import_neither_torch_nor_ray():
    out = subprocess.run([sys.executable, "-c", LIGHT], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split()  # fmt: skip
    assert int(out[0]) > 30  # every command and subcommand was asked for its --help
    assert out[1:] == [], f"imported while building the parser or answering: {out[1:]}"


def test_zoo_show_measure_builds_the_model(capsys):
    from vidtempo import cli

    assert cli.main(["zoo", "show", "tin_r50_1x1x8_40e_sthv1_rgb", "--measure"]) == 0
    assert "built model: 23,895,566 parameters (= zoo)" in capsys.readouterr().out


def documented_commands() -> list[tuple[str, str]]:
    """(where, command) of every `vidtempo …`, `python jobs/…` and `make …` line in a fenced
    block of the README and docs/ (continuation lines joined)."""
    found = []
    for doc in DOCS:
        for block in re.findall(r"```[a-z]*\n(.*?)```", doc.read_text(), flags=re.S):
            for line in re.sub(r"\\\n\s*", " ", block).splitlines():
                line = line.split(" #")[0]
                if line.lstrip().startswith("#"):
                    continue
                for m in re.finditer(r"(?:^|[\s\"(&;])((?:vidtempo(?=\s|$)|python jobs/\S+|^make\b)"
                                     r"(?: +[^\s\"#)]+)*)", line):  # fmt: skip
                    found.append((f"{doc.name}: {line.strip()[:70]}", m.group(1)))
    return found


def test_the_docs_show_commands():
    commands = [c for _, c in documented_commands()]
    assert len(commands) > 40, commands
    assert any(c.startswith("python jobs/") for c in commands)


@pytest.mark.parametrize("where,command", documented_commands(), ids=lambda v: v[:60])
def test_documented_command_parses(where, command):
    from vidtempo import cli

    words = shlex.split(command)
    if words[0] == "make":
        targets = re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M)
        assert words[1] in targets, f"{where}: no Makefile target {words[1]}"
        return
    if words[0] == "python":
        script = ROOT / words[1]
        assert script.exists(), f"{where}: {words[1]} does not exist"
        return
    argv = words[1:]
    parser = cli.build_parser()
    if argv == ["--version"]:  # the one top-level option: it prints and exits 0
        with pytest.raises(SystemExit) as done:
            parser.parse_args(argv)
        assert done.value.code in (0, None)
        return
    path = tuple(w for w in argv[:2] if not w.startswith("-"))
    known = set(subcommands(parser))
    while path and path not in known:
        path = path[:-1]
    assert path, f"{where}: no such command: {command}"
    if any(p in w for w in argv for p in PLACEHOLDERS):
        return  # an abridged line: its command exists (above); its flags cannot all be read
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `{command}` does not parse (exit {exc.code})")


def test_jobs_scripts_answer_help():
    for script in sorted((ROOT / "jobs").glob("*.py")):
        r = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True,
                           text=True)  # fmt: skip
        assert r.returncode == 0 and "usage:" in r.stdout, (script.name, r.stderr[-500:])


def test_the_rehearsal_runs_every_cluster_command_the_docs_show():
    """The cluster rehearsal executes the fenced commands of the pages it names, in order, with
    the placeholders substituted: each placeholder those commands hold is one it substitutes,
    and no `--gpu` reaches its CPU nodes."""
    from vidtempo.tooling import doc_commands, rehearsal

    commands = [c for page, section in rehearsal.PAGES
                for c in doc_commands.fenced_commands(ROOT / page, section)]  # fmt: skip
    assert commands[0].startswith("vidtempo prepare rawframes --dataset sthv1 --split train")
    for expected in ("ray up cluster.yaml", "vidtempo cluster-secrets", "ray down cluster.yaml"):
        assert expected in commands
    assert [c.split(" -- python ")[1].split()[0] for c in commands if " -- python " in c] == [
        "jobs/tin_sthv1.py", "jobs/tune_tin_sthv1.py"]  # fmt: skip
    r = rehearsal.Rehearsal.__new__(rehearsal.Rehearsal)
    r.work, r.head, r.job_id = Path("/rehearsal"), None, "raysubmit_x"
    for command in commands:
        here = r.as_run_here(command)
        assert not re.search(r"YOUR-|JOB_ID| /data/|--gpu", here), (command, here)
        if " python jobs/" in command:
            assert here.endswith(f" {rehearsal.ADDITION}") and "--imagenet s3://" in here


def test_fenced_commands_join_lines_and_drop_comments(tmp_path):
    from vidtempo.tooling.doc_commands import fenced_commands

    page = tmp_path / "page.md"
    page.write_text("# A\n```bash\nls -l   # list\n# a comment line\necho 'a # b' \\\n"
                    "    c\n```\n## B\n```text\nnot a command\n```\n```sh\nmake demo\n```\n"
                    "# C\n```bash\ntrue\n```\n")  # fmt: skip
    assert fenced_commands(page) == ["ls -l", "echo 'a # b' c", "make demo", "true"]
    assert fenced_commands(page, section="B") == ["make demo"]
    assert fenced_commands(page, section="A") == ["ls -l", "echo 'a # b' c", "make demo"]


# each mistake a parser can catch: (argv, what the one error line says)
MISTAKES = [
    (["tune"], "vidtempo tune needs CONFIG and --data"),
    (["train", "tin_r18_synthetc", "--data", "."],
     "no zoo config named 'tin_r18_synthetc'; did you mean 'tin_r18_synthetic'?"),
    (["train", "tin_r18_synthetic", "--data", "/nonexistent/data"],
     "data directory /nonexistent/data does not exist"),
    (["train", "tin_r18_synthetic", "--data", ".", "--set", "optim.lr"], "must look like key=value"),
    (["train", "tin_r18_synthetic", "--data", ".", "--set", "optim.lrr=1"], "optim.lrr"),
    (["tune", "tin_r18_synthetic", "--data", ".", "--space", "optim.lr"], "must look like KEY=SPEC"),
    (["evaluate", "tin_r18_synthetc", "ckpt.pt", "--data", "."], "no zoo config named"),
    (["train", "tin_r18_synthetic", "--data", ".", "--workers", "0"], "run.num_workers"),
]  # fmt: skip

CAUGHT = r"""
import contextlib, io, json, sys
from vidtempo import cli
out = []
for argv, _ in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = cli.main(argv)
    out.append([rc, err.getvalue().strip()])
print(json.dumps([out, [m for m in ("torch", "ray", "mlflow") if m in sys.modules]]))
"""


def test_parser_catchable_mistakes_fail_before_torch_or_ray_is_imported():
    """Each mistake: exit 2 and one error line, in a process that has imported neither torch
    nor Ray nor MLflow when it answers (the imports are what took 4-6 s before)."""
    done = subprocess.run([sys.executable, "-c", CAUGHT, json.dumps(MISTAKES)], cwd=ROOT,
                          capture_output=True, text=True, check=True)  # fmt: skip
    answers, imported = json.loads(done.stdout.splitlines()[-1])
    for (argv, said), (rc, err) in zip(MISTAKES, answers):
        assert rc == 2 and err.startswith("vidtempo: error:") and said in err, (argv, rc, err)
        assert len(err.splitlines()) == 1, (argv, err)
    assert imported == [], f"imported before the error: {imported}"


def test_version_says_the_version_and_the_commit():
    from vidtempo import lineage

    done = subprocess.run([str(Path(sys.executable).parent / "vidtempo"), "--version"], cwd=ROOT,
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.startswith("vidtempo 0.1.0, commit ")
    assert lineage.source()["commit"] in done.stdout
