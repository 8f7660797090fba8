"""Every command shown in README.md and docs/ runs, so the docs cannot rot.

In each file, the `$ ` lines of ```console blocks and the ```python blocks run in order, in a fresh copy of a sandbox
holding the files the examples name (photo.jpg, photos/, weights/bvlc_alexnet.npy, ...).
A command passes when it exits 0 and every output line shown under it appears in what it
printed. A shown line starting `Error:` means the example demonstrates a failure: then the
command must exit non-zero with that message. A block after `<!-- needs: gpu -->` runs too;
without a GPU it must fail with the "no GPU" message.

The only rewrite: the placeholder host https://mirror.example becomes a local HTTP server.
Plain `alexft ...` commands (with `VAR=value` prefixes and a `> file` redirect at most) run
in this process through click's test runner, since a fresh process would spend most of its
time importing TensorFlow; everything else runs in bash.
"""
import hashlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from fixtures import photo_paths, write_digits_folder
from alexft.cli import main
from http_server import serving

ROOT = Path(__file__).parents[1]
DOC_FILES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
MIRROR = "https://mirror.example"
PLAIN_ALEXFT = re.compile(r"((?:[A-Z_][A-Z0-9_]*=\S+\s+)*)alexft\s+([^|&;`<>()]*?)(?:\s*>\s*(\S+))?")


@dataclass
class Example:
    where: str  # file:line
    command: str  # a shell command, or a Python program for a ```python block
    shown: list = field(default_factory=list)
    needs_gpu: bool = False
    python: bool = False


def examples(path):
    """The console examples of a markdown file, in order."""
    found, in_console, needs_gpu, previous = [], False, False, ""
    lines = path.read_text(encoding="utf-8").splitlines()
    number = 0
    while number < len(lines):
        line = lines[number]
        number += 1
        if not in_console:
            if line.strip() == "```console":
                in_console, needs_gpu = True, previous.strip() == "<!-- needs: gpu -->"
            elif line.strip() == "```python":
                end = lines.index("```", number)
                found.append(Example(f"{path.name}:{number}", "\n".join(lines[number:end]), python=True))
                number = end + 1
            if line.strip():
                previous = line
            continue
        if line.strip() == "```":
            in_console = False
        elif line.startswith("$ "):
            command, start = line[2:], number
            while command.endswith("\\"):
                command = command[:-1] + lines[number].strip()
                number += 1
            found.append(Example(f"{path.name}:{start}", command, needs_gpu=needs_gpu))
        elif found and line.strip() and line.strip() != "...":
            found[-1].shown.append(line.strip())
    return found


def test_every_doc_file_has_examples_and_the_parser_sees_them():
    assert (ROOT / "docs" / "commands.md") in DOC_FILES
    for path in DOC_FILES:
        # cluster.md's commands need two machines: tests/test_multiworker.py runs them on one.
        if path.name not in ("README.md", "benchmarks.md", "cluster.md", "reliability.md"):
            assert examples(path), f"{path.name} shows no command"


@pytest.fixture(scope="session")
def sandbox_template(tmp_path_factory, canonical_weights_file, canonical_caffemodel):
    """The files the examples name, built once; each doc file works on its own copy."""
    root = tmp_path_factory.mktemp("docs_sandbox")
    photos = photo_paths()
    (root / "weights").mkdir()
    (root / "weights" / "bvlc_alexnet.npy").symlink_to(canonical_weights_file)
    (root / "bvlc_alexnet.caffemodel").symlink_to(canonical_caffemodel)
    shutil.copy(photos["chelsea"], root / "chelsea.png")
    shutil.copy(photos["china"], root / "photo.jpg")
    shutil.copy(photos["flower"], root / "new.jpg")
    write_digits_folder(root / "photos", per_class=6, classes=range(3))
    write_digits_folder(root / "held_out", per_class=3, classes=range(3), start=6)  # other images of the same classes
    shutil.copytree(ROOT / "examples", root / "examples")
    (root / "broken.jpg").write_bytes(photos["china"].read_bytes()[:3000])  # a truncated JPEG
    val = root / "ILSVRC2012_val"
    val.mkdir()
    listing = []
    for number, (name, label) in enumerate([("chelsea", 281), ("coffee", 967), ("china", 698), ("flower", 985)], 1):
        image = f"ILSVRC2012_val_{number:08d}.JPEG"
        shutil.copy(photos[name], val / image)  # PNGs named .JPEG: decoding goes by content
        listing.append(f"{image} {label}")
    (root / "val.txt").write_text("\n".join(listing) + "\n")
    return root


@pytest.fixture(scope="session")
def mirror(canonical_weights_file):
    body = canonical_weights_file.read_bytes()
    with serving({"/bvlc_alexnet.npy": ("ok", body)}) as url:
        yield url, hashlib.sha256(body).hexdigest()


def _environment(sandbox, mirror_url, sha256):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ALEXFT_", "TF_CPP"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        ALEXFT_CACHE=str(sandbox / ".cache"),
        ALEXFT_WEIGHTS_URL=f"{mirror_url}/bvlc_alexnet.npy",
        SHA256=sha256,
    )
    return env


def _has_gpu():
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _check(example, result):
    printed = [line.strip() for line in (result.stdout + result.stderr).splitlines()]
    context = f"{example.where}: $ {example.command}\n--- stdout\n{result.stdout[-2000:]}\n--- stderr\n{result.stderr[-2000:]}"
    if example.needs_gpu and not _has_gpu():
        assert result.returncode != 0 and "TensorFlow sees no GPU" in result.stderr, context
        return
    expects_failure = any(line.startswith(("Error:", "error:")) for line in example.shown)
    assert (result.returncode != 0) == expects_failure, context
    missing = [line for line in example.shown if line not in printed]
    assert not missing, f"shown but not printed: {missing}\n{context}"


def _run_in_process(command, sandbox, env):
    """An `alexft` command run by click's test runner in `sandbox`, or None if it needs a shell."""
    plain = PLAIN_ALEXFT.fullmatch(command)
    if not plain:
        return None
    assignments, arguments, redirect = plain.groups()
    variables = dict(env, **dict(item.split("=", 1) for item in assignments.split()))
    argv = [re.sub(r"\$(\w+)", lambda name: variables[name.group(1)], token) for token in shlex.split(arguments)]
    result = CliRunner().invoke(main, argv, env=variables, catch_exceptions=False)
    if redirect:
        (sandbox / redirect).write_text(result.stdout)
    return SimpleNamespace(returncode=result.exit_code, stdout="" if redirect else result.stdout, stderr=result.stderr)


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda path: path.name)
def test_every_command_in_the_docs_runs(doc, sandbox_template, mirror, tmp_path, monkeypatch):
    sandbox = tmp_path / "sandbox"
    shutil.copytree(sandbox_template, sandbox, symlinks=True)
    env = _environment(sandbox, *mirror)
    monkeypatch.chdir(sandbox)
    monkeypatch.delenv("ALEXFT_WEIGHTS", raising=False)
    for example in examples(doc):
        command = example.command.replace(MIRROR, mirror[0])
        result = None if example.python else _run_in_process(command, sandbox, env)
        if result is None:
            argv = [sys.executable, "-c", command] if example.python else ["bash", "-c", command]
            result = subprocess.run(argv, cwd=sandbox, env=env, capture_output=True, text=True, timeout=900)
        _check(example, result)


def _readme_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```bash\n(.+?)\n```", text)


def test_readme_test_command_is_what_ci_runs():
    install_and_run, install_and_test = _readme_commands()[:2]
    assert install_and_test in (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_run.replace("pip install -e .", "pip install -e '.[test]'").startswith(install_and_test.rsplit("&&", 1)[0])


def test_every_test_the_reliability_page_names_exists():
    text = (ROOT / "docs" / "reliability.md").read_text(encoding="utf-8")
    named = re.findall(r"`(test_\w+\.py)::(test_\w+)`", text)
    assert len(named) >= 30
    for module, test in named:
        source = (ROOT / "tests" / module).read_text(encoding="utf-8")
        assert re.search(rf"^def {test}\(", source, re.MULTILINE), f"docs/reliability.md names {module}::{test}, which does not exist"


def test_the_readmes_first_command_runs_as_written(tmp_path, canonical_caffemodel, canonical_params):
    """The README's install-and-classify line, from its `alexft` part on, run as written in a
    fresh process from the repository's top: no weights anywhere, so the caffemodel is
    downloaded (from a local server standing in for the zoo, pinned by SHA-1 as the zoo's URL
    is), verified, converted once, and the shipped photo classified. A second run loads the
    converted file and downloads nothing."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    first = readme[readme.index("```bash\n") + len("```bash\n"):].splitlines()[0]
    command = first[first.index("alexft classify"):]
    assert command == "alexft classify examples/chelsea.jpg" and (ROOT / command.split()[-1]).is_file()
    body = canonical_caffemodel.read_bytes()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ALEXFT_", "TF_CPP"))}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", ALEXFT_CACHE=str(tmp_path / "cache"))
    with serving({"/bvlc_alexnet.caffemodel": ("ok", body)}) as url:
        env["ALEXFT_WEIGHTS_URL"] = f"{url}/bvlc_alexnet.caffemodel#sha1={hashlib.sha1(body).hexdigest()}"
        first_run = subprocess.run(shlex.split(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        second_run = subprocess.run(shlex.split(command), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert len(url.requests) == 1
    assert first_run.returncode == 0, first_run.stderr
    assert f"checked against SHA-1 {hashlib.sha1(body).hexdigest()}" in first_run.stderr
    assert "converted" in first_run.stderr and "bvlc_alexnet.npz" in first_run.stderr
    lines = first_run.stdout.splitlines()
    from alexft.weights import imagenet_class_names

    top = [re.fullmatch(r"\s*(\d+\.\d+)%\s+(.+)", line) for line in lines[1:]]
    assert lines[0] == "examples/chelsea.jpg" and len(top) == 5 and all(top), first_run.stdout
    assert all(match[2] in imagenet_class_names() for match in top)
    assert [float(match[1]) for match in top] == sorted((float(match[1]) for match in top), reverse=True)
    assert second_run.returncode == 0 and second_run.stdout == first_run.stdout and "downloading" not in second_run.stderr
    # The first run answered on TensorFlow, then built the LiteRT copy the second one used.
    assert "building a LiteRT copy" in first_run.stderr and "building" not in second_run.stderr
