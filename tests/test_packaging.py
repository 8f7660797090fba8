"""The wheel `pip install .` builds holds the whole package: an editable install (the tests')
reads the source folder and would not notice a subpackage left out."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_every_module_and_data_file(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    wheel, = tmp_path.glob("alexft-*.whl")
    packed = set(zipfile.ZipFile(wheel).namelist())
    source = {path.relative_to(ROOT).as_posix() for path in (ROOT / "alexft").rglob("*")
              if path.suffix in (".py", ".txt") and "__pycache__" not in path.parts}
    assert {"alexft/cli/__init__.py", "alexft/weights/__init__.py", "alexft/imagenet_classes.txt"} <= source
    assert source - packed == set()
