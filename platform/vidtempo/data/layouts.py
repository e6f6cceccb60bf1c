"""Datasets as they are distributed: what `vidtempo prepare --dataset NAME` assumes unless a flag
says otherwise, and the check that a list and a root match before anything is converted.

The layouts are those of MMAction2's `tools/data/<dataset>/` preparation, which writes the lists
(`<dataset>_{train,val}_list_{rawframes,videos}.txt`) and extracts the frames:

| dataset     | rawframes      | start | videos | class names (beside the list, or in annotations/) |
|-------------|----------------|-------|--------|---------------------------------------------------|
| sthv1       | `{:05}.jpg`    | 1     | —      | something-something-v1-labels.csv (one per line)  |
| sthv2       | `img_{:05}.jpg`| 1     | .webm  | something-something-v2-labels.json (name → index) |
| kinetics400 | `img_{:05}.jpg`| 1     | .mp4   | label_map_k400.txt, or the CSV's (sorted)         |
| kinetics600 | `img_{:05}.jpg`| 1     | .mp4   | label_map_k600.txt, or the CSV's (sorted)         |
| ucf101      | `img_{:05}.jpg`| 1     | .avi   | classInd.txt (`1 ApplyEyeMakeup`)                 |

Something-Something V1 is distributed as frames only (`<id>/00001.jpg`); the others' frames are
what MMAction2's extraction writes. Any other name gets the generic `img_{:05}.jpg` from 1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vidtempo import storage
from vidtempo.data.schema import DataError


@dataclass(frozen=True)
class Layout:
    filename_tmpl: str = "img_{:05}.jpg"
    start_index: int = 1
    class_files: tuple[str, ...] = ()  # looked for beside the list, then in annotations/


LAYOUTS = {
    "sthv1": Layout("{:05}.jpg", 1, ("something-something-v1-labels.csv",)),
    "sthv2": Layout("img_{:05}.jpg", 1, ("something-something-v2-labels.json",)),
    "kinetics400": Layout("img_{:05}.jpg", 1, ("label_map_k400.txt",)),
    "kinetics600": Layout("img_{:05}.jpg", 1, ("label_map_k600.txt",)),
    "ucf101": Layout("img_{:05}.jpg", 1, ("classInd.txt",)),
}
GENERIC = Layout()
SAMPLE = 8  # list entries probed before converting: all of them missing stops the conversion


def layout(dataset: str) -> Layout:
    return LAYOUTS.get(dataset, GENERIC)


def class_file(dataset: str, list_file: str) -> str | None:
    """The dataset's class-name file beside `list_file` (or in annotations/ there), if any."""
    folder = str(list_file).replace("\\", "/").rsplit("/", 1)[0] if "/" in str(list_file) else "."
    for name in layout(dataset).class_files:
        for where in (storage.join(folder, name), storage.join(folder, "annotations", name)):
            if storage.exists(where):
                return where
    return None


def parse_class_names(text: str, source: str) -> list[str]:
    """Class names in label order from any of the distributed forms: one name per line; `index
    name` lines (UCF101's classInd.txt, 1-based); a JSON mapping name → index (Something-
    Something V2) or a JSON list."""
    stripped = text.strip()
    if stripped.startswith(("{", "[")):
        data = json.loads(stripped)
        if isinstance(data, list):
            return [str(x) for x in data]
        by_index = sorted((int(i), name) for name, i in data.items())
        if [i for i, _ in by_index] != list(range(len(by_index))):
            raise DataError(f"{source}: the indices are not 0..{len(by_index) - 1}")
        return [name for _, name in by_index]
    lines = [ln.strip() for ln in stripped.splitlines() if ln.strip()]
    numbered = [ln.split(maxsplit=1) for ln in lines]
    if lines and all(len(p) == 2 and p[0].isdigit() for p in numbered):
        first = min(int(p[0]) for p in numbered)  # classInd.txt counts from 1
        by_index = sorted((int(p[0]) - first, p[1]) for p in numbered)
        if [i for i, _ in by_index] == list(range(len(by_index))):
            return [name for _, name in by_index]
    return lines


def check_matches(jobs: list[dict], root: str, list_file: str) -> None:
    """Fail before converting when none of the first SAMPLE inputs of the list is under `root`
    as the options describe it, saying what was looked for and what is there instead."""
    sample = jobs[:SAMPLE]
    if not sample or any(_found(j) for j in sample):
        return
    j = sample[0]
    if j["kind"] == "rawframes":
        wanted = storage.join(j["dir"], j["filename_tmpl"].format(j["start_index"]))
        there = _listed(j["dir"])
        if there is None:
            seen = _listed(root) or []
            found = (f"{storage.where(j['dir'])} does not exist; {storage.where(root)} holds "
                     f"{_few(seen)}")  # fmt: skip
            fix = "check --root (the folder the list's frame_dir entries are relative to)"
        else:
            found = f"{storage.where(j['dir'])} holds {_few(there)}"
            fix = ("pass the frames' --filename-tmpl and --start-index (--dataset sthv1 sets "
                   "'{:05}.jpg' from 1; MMAction2's extraction writes 'img_{:05}.jpg')")
    else:
        wanted = j["path"]
        folder = str(wanted).rsplit("/", 1)[0]
        found = f"{storage.where(folder)} holds {_few(_listed(folder) or [])}"
        fix = "check --root and the list's paths"
    raise DataError(
        f"{list_file} and --root {storage.where(root)} match nothing: none of the first "
        f"{len(sample)} inputs is there. Looked for {storage.where(wanted)}; {found}. Nothing "
        f"was converted: {fix}"
    )


def _found(job: dict) -> bool:
    if job["kind"] == "rawframes":
        return storage.exists(storage.join(job["dir"],
                                           job["filename_tmpl"].format(job["start_index"])))  # fmt: skip
    return storage.exists(job["path"])


def _listed(folder: str) -> list[str] | None:
    try:
        return sorted(storage.listdir(folder)) if storage.is_dir(folder) else None
    except OSError:
        return None


def _few(names: list[str]) -> str:
    if not names:
        return "nothing"
    shown = ", ".join(names[:4])
    return f"{shown}{' …' if len(names) > 4 else ''} ({len(names)} entries)"
