"""Large folders: listing, splitting and streaming 10,000 and 100,000 images keep memory flat,
and training starts without reading every image first.

Builds a folder of N image files in 100 class folders (hard links to a dozen small real
JPEGs, so 100,000 files cost seconds and no disk), then, in a fresh process per N:
- lists and splits it as `alexft finetune` does (`load_dataset`),
- builds the training input pipeline (`train_data.image_pipeline`: decode, resize, mean,
  random crop and mirror, batches of 64) and times its first batch,
- streams every training image through it,
- lists it for `alexft classify --shard 0/4`,
reporting time, resident memory after each step and the peak. The model is left out: it
adds the same ~1 GB whatever N is, and would take hours for 100,000 images here.

    python benchmarks/large_folder.py [--sizes 10000,100000]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CLASSES = 100


def make_folder(root, count):
    """`count` files in CLASSES folders, hard-linked to 12 small JPEGs cut from real photos."""
    from alexft.demo import sample_photos

    sources = []
    for number, path in enumerate(sorted(sample_photos().values())):
        image = cv2.imread(str(path))
        for corner in range(2):
            crop = image[corner * 60:corner * 60 + 120, corner * 80:corner * 80 + 160]
            source = root / f"source_{number}_{corner}.jpg"
            cv2.imwrite(str(source), crop)
            sources.append(source)
    for index in range(count):
        folder = root / "data" / f"class_{index % CLASSES:03d}"
        if index < CLASSES:
            folder.mkdir(parents=True)
        os.link(sources[index % len(sources)], folder / f"{index:06d}.jpg")
    return root / "data"


def memory_mib():
    """(current, peak) resident set size of this process, MiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def measure(folder):
    """Runs in a fresh process for one folder; prints one JSON line."""
    import numpy as np

    from alexft.data import BrokenFiles, load_dataset
    from alexft.pipeline import shard
    from alexft.preprocess import find_images
    from alexft.train_data import epoch_plan, image_pipeline

    result = {"after_import_mib": memory_mib()[0]}
    started = time.perf_counter()
    dataset = load_dataset(folder, val_split=0.1, seed=0)
    result.update(list_split_s=time.perf_counter() - started, after_list_mib=memory_mib()[0],
                  train_images=len(dataset.train), val_images=len(dataset.val))

    ledger = BrokenFiles()
    order, _ = epoch_plan(len(dataset.train), 0, 0)
    started = time.perf_counter()
    batches = iter(image_pipeline(dataset.train, order, 0, 64, 0, ledger))
    first = next(batches)
    result["first_batch_s"] = time.perf_counter() - started
    streamed = len(first[1])
    for images, labels in batches:
        streamed += len(labels)
    seconds = time.perf_counter() - started
    result.update(streamed=streamed, stream_images_per_s=streamed / seconds, after_stream_mib=memory_mib()[0])

    started = time.perf_counter()
    mine = shard(find_images([folder]), 0, 4)
    result.update(classify_list_s=time.perf_counter() - started, classify_shard_images=len(mine))
    result["peak_mib"] = memory_mib()[1]
    assert streamed == len(dataset.train) and not ledger.errors and np.isfinite(first[0].numpy()).all()
    print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # the child process's job
    args = parser.parse_args()
    if args.measure:
        return measure(Path(args.measure))
    rows = []
    for size in [int(text) for text in args.sizes.split(",")]:
        with tempfile.TemporaryDirectory() as scratch:
            started = time.perf_counter()
            folder = make_folder(Path(scratch), size)
            made = time.perf_counter() - started
            output = subprocess.run([sys.executable, __file__, "--measure", str(folder)], capture_output=True, text=True, check=True)
            rows.append(dict(files=size, make_s=made, **json.loads(output.stdout.strip().splitlines()[-1])))
    print(f"{'files':>8} {'list+split':>10} {'first batch':>11} {'stream':>11} {'RSS import':>10} {'+list':>7} "
          f"{'+stream':>8} {'peak':>7}")
    for row in rows:
        print(f"{row['files']:>8} {row['list_split_s']:>9.2f}s {row['first_batch_s']:>10.2f}s "
              f"{row['stream_images_per_s']:>7.0f} im/s {row['after_import_mib']:>7.0f}MiB "
              f"{row['after_list_mib'] - row['after_import_mib']:>+6.0f} {row['after_stream_mib'] - row['after_import_mib']:>+7.0f} "
              f"{row['peak_mib']:>6.0f}MiB")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
