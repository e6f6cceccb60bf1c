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
DOCS = [ROOT / "README.md", ROOT / "datasets" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
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
    # and the commands cluster.yaml's comments name (`vidtempo …`, across comment lines)
    comments = " ".join(line.split("#", 1)[1].strip()
                        for line in (ROOT / "cluster.yaml").read_text().splitlines() if "#" in line)  # fmt: skip
    for m in re.finditer(r"`(vidtempo [^`]+)`", comments):
        found.append((f"cluster.yaml: {m.group(1)[:60]}", m.group(1)))
    return found


def test_the_docs_show_commands():
    commands = [c for _, c in documented_commands()]
    assert len(commands) > 40, commands
    assert any(c.startswith("python jobs/") for c in commands)


@pytest.mark.parametrize("where,command", documented_commands(), ids=lambda v: v[:60])
def test_documented_command_parses(where, command, capsys):
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
    said = capsys.readouterr().err
    assert "is now" not in said, f"{where}: `{command}` uses an old spelling: {said}"


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
    (["doctor", "--data", "/nonexistent/data"], "data directory /nonexistent/data does not exist"),
    (["zoo", "plan", "tin_r50_1x1x8_40e_sthv1_rgb", "--data", "/nonexistent/d"], "does not exist"),
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


# the commands that can run on a cluster: each names it with --address
ON_A_CLUSTER = [("train",), ("tune",), ("evaluate",), ("doctor",), ("prepare", "rawframes"),
                ("prepare", "videos"), ("prepare", "synthetic")]  # fmt: skip
# each old spelling, what it now is, and a command line that uses it
RENAMED = [
    (["prepare", "videos", "--list", "l", "--root", "r", "--out", "o", "--dataset", "d", "--split",
      "train", "--storage", "frames"], "format", "frames"),
    (["prepare", "synthetic", "--out", "o", "--workers", "3"], "decoders", 3),
    (["prepare", "synthetic", "--out", "o", "--ray", "10.0.0.1:6379"], "address", "10.0.0.1:6379"),
    (["zoo", "plan", "tin_r50_1x1x8_40e_sthv1_rgb", "--storage", "video"], "format", "video"),
    (["doctor", "--config", "tin_r18_synthetic"], "config", "tin_r18_synthetic"),
    (["import-checkpoint", "mmaction2", "in.pth", "out.pt", "--config", "tin_r18_synthetic"],
     "config", "tin_r18_synthetic"),
]  # fmt: skip


def _options(parser, path):
    sub = parser
    for word in path:
        sub = next(a for a in sub._actions if isinstance(a, argparse._SubParsersAction)).choices[word]
    return sub, {o: a for a in sub._actions for o in a.option_strings if a.help != argparse.SUPPRESS}


def test_one_vocabulary_over_every_command():
    """docs/commands.md's vocabulary, held over the real parser: --storage is only ever the
    checkpoint root, --workers only ever Ray Train workers, --address names the cluster in every
    command that can use one, and the recipe is the first positional argument of every command
    that runs one (the jobs/ scripts' too)."""
    from vidtempo import cli
    from vidtempo.cli.train import add_run_arguments, add_tune_arguments

    parser = cli.build_parser()
    for path in subcommands(parser):
        sub, opts = _options(parser, path)
        if "--storage" in opts:
            assert "checkpoint root" in opts["--storage"].help, path
        if "--workers" in opts:
            assert "Ray Train workers" in opts["--workers"].help, path
        if path in ON_A_CLUSTER:
            assert "--address" in opts and "RAY_ADDRESS" in opts["--address"].help, path
    for path in (("train",), ("tune",), ("evaluate",), ("doctor",), ("import-checkpoint",),
                 ("zoo", "show"), ("zoo", "plan"), ("zoo", "import-log")):  # fmt: skip
        sub, opts = _options(parser, path)
        positionals = [a for a in sub._actions if not a.option_strings and a.dest != "help"]
        assert positionals[0].dest == "config" or positionals[0].metavar == "RECIPE", path
        if path[0] in ("train", "tune", "evaluate", "doctor"):
            # the commands that write or read runs name where: checkpoints, tracking, experiment
            assert {"--storage", "--mlflow-uri", "--experiment"} <= set(opts), path
    for add, spec in ((add_run_arguments, "--config"), (add_tune_arguments, "--config"),
                      (add_run_arguments, "tin_r50_1x1x8_40e_sthv1_rgb")):  # the jobs/ scripts
        p = argparse.ArgumentParser()
        add(p, spec)
        args = p.parse_args(["tin_r18_synthetic", "--data", "d"])
        assert args.config == "tin_r18_synthetic"


@pytest.mark.parametrize("argv,dest,value", RENAMED, ids=lambda v: " ".join(v) if isinstance(v, list) else str(v))
def test_an_old_spelling_works_for_a_release_and_says_so(argv, dest, value, capsys):
    from vidtempo import cli
    from vidtempo.cli.common import apply_renamed

    args = cli.build_parser().parse_args(argv)
    apply_renamed(args)
    assert getattr(args, dest) == value
    note = capsys.readouterr().err.strip().splitlines()
    assert len(note) == 1 and "is now" in note[0] and "next release" in note[0], note


def test_jobs_scripts_take_the_recipe_first_and_still_their_old_config_flag():
    for argv in (["tin_r18_synthetc", "--data", "."], ["--config", "tin_r18_synthetc", "--data", "."]):
        done = subprocess.run([sys.executable, "jobs/train.py", *argv], cwd=ROOT,
                              capture_output=True, text=True)  # fmt: skip
        assert done.returncode == 2 and "did you mean 'tin_r18_synthetic'" in done.stderr, done.stderr
        assert ("--config is now the first argument" in done.stderr) == ("--config" in argv)
