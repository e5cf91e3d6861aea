"""`catgan prepare`: turn cat photos into training-ready datasets, one folder per resolution.

Sources: the Kaggle CAT archive (read straight from the zip), a folder holding CAT_00..CAT_06, one such
folder, or a folder of face crops. Folders are classified one by one: a folder with `.cat` files (or
named CAT_NN) holds landmark photos, any other folder face crops (sources.scan). Each photo is aligned in
a worker (photo.process); this module runs the whole and writes the output.

Output, for each size S: `OUT/cats-S/` with one image per kept face (`<photo name>.png`, unique, sorted)
and `dataset.json` (each face's source path, crop and landmarks, and why each dropped input was
dropped), plus `OUT/contact-S.png`; with --holdout, the held-out share in `OUT/cats-S-holdout/`; and the
run's report in `OUT/report.txt`. Each folder is written as `OUT/.NAME.partial-<pid>` and renamed when
complete, so a crash or kill never leaves a partial one (a rerun removes the remains); a rerun skips
sizes that are already finished with the same recipe and refuses ones made with another.
"""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import os
import random
import re
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from PIL import Image

from catgan import __version__
from catgan.data.annotations import load_outliers
from catgan.data.photo import Job, Outcome, Square, process
from catgan.data.sources import MAX_FILE_BYTES, Drop, Item, open_zip, scan
from catgan.data.split import check_fraction, is_holdout
from catgan.errors import CatganError
from catgan.io import atomic_write, pid_alive
from catgan.runtime import cpu_count

FORMAT_VERSION = 1
# What a killed run leaves behind: dataset folders, contact sheets and the report, each under a temp name.
PARTIAL = re.compile(r"\.(?:cats-\d+(?:-holdout)?|contact-\d+\.png|report\.txt)\.(?:partial|tmp)-(\d+)")
REPORT = "report.txt"


@dataclass(frozen=True)
class PrepareConfig:
    """Everything `catgan prepare` does. `workers=0` means all cores; `square="auto"` pads landmark
    faces to the full reference square and centre-crops face-folder images."""

    sources: tuple[Path, ...]
    out: Path
    sizes: tuple[int, ...] = (64, 128)
    image_format: Literal["png", "jpg"] = "png"
    quality: int = 95  # JPEG quality (only for image_format="jpg")
    workers: int = 0
    outliers: bool = True  # drop the original system's 134 outliers by name
    square: Square = "auto"
    max_pixels: int = Image.MAX_IMAGE_PIXELS or 89_478_485  # larger images are decompression bombs
    contact: int = 64  # faces on the contact sheet
    progress: bool = True
    holdout: float | None = None  # share of photos kept out of training, in cats-S-holdout/ (split.py)
    max_bytes: int = MAX_FILE_BYTES  # larger input files are skipped before they are read

    def __post_init__(self) -> None:
        if not self.sources:
            raise CatganError("give at least one SOURCE (a CAT zip, CAT_0x folder(s) or a folder of faces)")
        if not self.sizes or any(s < 4 or s > 4096 for s in self.sizes):
            raise CatganError(f"sizes must be whole numbers in 4..4096, got {list(self.sizes)}")
        if len(set(self.sizes)) != len(self.sizes):
            raise CatganError(f"sizes are repeated: {list(self.sizes)}")
        if self.image_format not in ("png", "jpg"):
            raise CatganError(f"format must be png or jpg, got {self.image_format!r}")
        if not 1 <= self.quality <= 100:
            raise CatganError(f"quality must be in 1..100, got {self.quality}")
        if self.square not in ("auto", "crop", "pad"):
            raise CatganError(f"square must be auto, crop or pad, got {self.square!r}")
        if self.workers < 0:
            raise CatganError(f"workers must be >= 0 (0 = all cores), got {self.workers}")
        if self.holdout is not None:
            check_fraction(self.holdout)
        if not isinstance(self.max_bytes, int) or self.max_bytes < 1:
            raise CatganError(
                f"the input size limit must be a positive number of bytes, got {self.max_bytes!r}"
            )

    def recipe(self) -> dict:
        """What decides the content of a `cats-S` folder (not sizes, workers or progress). The held-out
        share is named only when there is one, so datasets made before --holdout keep their recipe."""
        recipe = {
            "sources": [str(Path(s).resolve()) for s in self.sources],
            "format": self.image_format,
            "quality": self.quality if self.image_format == "jpg" else None,
            "outliers": self.outliers,
            "square": self.square,
        }
        return recipe | ({"holdout": self.holdout} if self.holdout is not None else {})


# ---- the run ------------------------------------------------------------------------------------


@dataclass
class PrepareReport:
    out: Path
    read: int = 0  # photos found (and annotations without a photo)
    kinds: Counter = field(default_factory=Counter)  # landmarks / face photos processed
    kept: dict[int, int] = field(default_factory=dict)
    held_out: dict[int, int] = field(default_factory=dict)  # size -> faces in cats-S-holdout
    too_small: dict[int, int] = field(default_factory=dict)
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first "source: detail"
    notes: Counter = field(default_factory=Counter)
    skipped: list[int] = field(default_factory=list)  # sizes already prepared with the same recipe
    seconds: float = 0.0
    workers: int = 1

    def format(self) -> str:
        lines = []
        for s in self.skipped:
            lines.append(f"{self.out / f'cats-{s}'}: already prepared with the same recipe, skipped")
        if not self.kept:
            return "\n".join(lines)
        rate = sum(self.kinds.values()) / max(self.seconds, 1e-9)
        lines.append(
            f"read {self.read} inputs ({self.kinds['landmarks']} landmark photos, {self.kinds['face']} face "
            f"crops processed) in {self.seconds:.1f} s, {rate:.1f} photos/s with {self.workers} worker(s)"
        )
        for s, n in sorted(self.kept.items()):
            lines.append(
                f"  kept {n:6d} at {s}px -> {self.out / f'cats-{s}'}  ({self.too_small.get(s, 0)} too small)"
            )
            if s in self.held_out:
                empty = "  (empty: raise --holdout or add photos)" if not self.held_out[s] else ""
                lines.append(
                    f"  held out {self.held_out[s]:3d} at {s}px -> {self.out / f'cats-{s}-holdout'}{empty}"
                )
        if self.dropped:
            lines.append(f"  dropped {sum(self.dropped.values())} inputs:")
            for reason, n in self.dropped.most_common():
                lines.append(f"    {reason:<15} {n:6d}   e.g. {self.examples[reason]}")
        for note, n in self.notes.most_common():
            lines.append(f"  note: {n} photo(s) {note}")
        lines.append(
            f"this report: {self.out / REPORT}; every input's record or reason: "
            f"{self.out / 'cats-S' / 'dataset.json'}"
        )
        return "\n".join(lines)

    def text(self, encoding: str | None = "ascii") -> str:
        """format() made printable in `encoding` (a strict terminal's): file-name bytes that are not
        UTF-8 become \\xNN, characters the encoding lacks become \\uNNNN escapes."""
        raw = self.format().encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        try:
            return raw.encode(encoding or "ascii", "backslashreplace").decode(encoding or "ascii")
        except LookupError:  # an encoding name Python does not know
            return raw.encode("ascii", "backslashreplace").decode("ascii")


def _clean_stale(out: Path) -> None:
    """Remove what runs that were killed left (folders and files under a temp name whose process no
    longer exists)."""
    for p in out.iterdir():
        m = PARTIAL.fullmatch(p.name)
        if m and (int(m.group(1)) == os.getpid() or not pid_alive(int(m.group(1)))):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _finished(folder: Path, recipe: dict) -> dict | None:
    """The dataset.json of a finished dataset with this recipe, None where there is none; refuses one made
    with another recipe."""
    if not folder.exists():
        return None
    try:
        meta = json.loads((folder / "dataset.json").read_text())
    except (OSError, ValueError):
        raise CatganError(
            f"{folder} exists but is not a finished catgan dataset (no readable dataset.json); "
            "remove it or choose another --out"
        ) from None
    if meta.get("recipe") != recipe:
        raise CatganError(
            f"{folder} was prepared from other sources or options ({meta.get('recipe')}); "
            "remove it or choose another --out"
        )
    return meta


def _worker_init() -> None:
    """Ctrl-C reaches the whole process group: the parent stops the pool, so workers ignore it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_jobs(jobs: list[Job], workers: int, progress: bool) -> Iterator[Outcome]:
    """Process jobs inline (1 worker) or in a process pool, with a bounded number in flight."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="photo", desc="prepare", disable=not progress, dynamic_ncols=True)
    try:
        if workers <= 1:
            for job in jobs:
                yield process(job)
                bar.update()
            return
        ctx = multiprocessing.get_context("spawn")  # no fork of a parent that may hold torch threads
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
            todo = iter(jobs)
            pending = {pool.submit(process, j) for j in _take(todo, 4 * workers)}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        yield f.result()
                        bar.update()
                    pending |= {pool.submit(process, j) for j in _take(todo, len(done))}
            except BaseException:  # Ctrl-C, SIGTERM, disk full: the workers finish their photo and exit
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        bar.close()


def _take(it: Iterator[Job], n: int) -> list[Job]:
    return [j for _, j in zip(range(n), it, strict=False)]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every cleanup runs; `signum` lets the CLI exit 128 + signum."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM ends prepare like Ctrl-C: the pool stops, temp output is removed (raises Terminated)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals only reach the main thread
        return

    def handler(signum, frame) -> None:
        raise Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_contact_sheet(folder: Path, files: list[str], dest: Path, count: int, seed: int = 0) -> None:
    """A grid of up to `count` random faces from `folder` (8 per row), written atomically to `dest`."""
    if not files:
        return
    chosen = sorted(random.Random(seed).sample(files, min(count, len(files))))
    tiles = []
    for f in chosen:
        with Image.open(folder / f) as im:  # closed at once: up to `count` files would stay open
            tiles.append(im.convert("RGB"))
    size, cols, gap = tiles[0].width, min(8, len(tiles)), 2
    rows = math.ceil(len(tiles) / cols)
    sheet = Image.new("RGB", (cols * (size + gap) + gap, rows * (size + gap) + gap), (40, 40, 40))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, (gap + (i % cols) * (size + gap), gap + (i // cols) * (size + gap)))
    atomic_write(dest, lambda tmp: sheet.save(tmp, "PNG"), "contact sheet")


def _folders(size: int, holdout: bool) -> list[str]:
    return [f"cats-{size}"] + ([f"cats-{size}-holdout"] if holdout else [])


def _plan(out: Path, config: PrepareConfig, report: PrepareReport) -> list[int]:
    """The sizes still to make. Finished ones are skipped (their missing contact sheet is written); stale
    temp files of killed runs are removed."""
    if not out.exists():
        return list(config.sizes)
    if not out.is_dir():
        raise CatganError(f"--out {out} exists and is not a folder")
    recipe, todo = config.recipe(), []
    for s in config.sizes:
        metas = [_finished(out / f, recipe) for f in _folders(s, config.holdout is not None)]
        if metas[0] is None:  # cats-S is renamed last: without it the size is not finished
            todo.append(s)
            continue
        report.skipped.append(s)
        sheet = out / f"contact-{s}.png"
        if not sheet.exists():  # a run killed between renaming cats-S and writing its sheet
            write_contact_sheet(
                out / f"cats-{s}", [r["file"] for r in metas[0]["images"]], sheet, config.contact
            )
    _clean_stale(out)
    return todo


def prepare(config: PrepareConfig) -> PrepareReport:
    """Run `catgan prepare`. Raises CatganError for bad sources or a conflicting existing output; Ctrl-C
    (KeyboardInterrupt) and SIGTERM (Terminated, a KeyboardInterrupt) stop the workers and remove the
    temp output first."""
    start = time.perf_counter()
    for source in config.sources:
        if not Path(source).exists():
            raise CatganError(f"source {source} does not exist")
    out = Path(config.out)
    if any(Path(src).resolve() == out.resolve() for src in config.sources):
        raise CatganError(f"--out {out} is a SOURCE itself; write the datasets to another folder")
    report = PrepareReport(out)
    sizes = _plan(out, config, report)
    if not sizes:
        return report
    # Scan before creating --out: a source that holds nothing leaves no empty output folder behind.
    items, drops = scan(config.sources, load_outliers() if config.outliers else frozenset(), out.resolve())
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CatganError(f"cannot create --out {out}: {err.strerror or err}") from None
    try:
        with _sigterm_as_interrupt():
            _make(config, out, sizes, items, drops, report)
    finally:
        open_zip.cache_clear()  # inline runs opened archives here: close them, so a rewritten zip is reread
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only when empty: a run that failed before writing anything
    report.seconds = time.perf_counter() - start
    atomic_write(
        out / REPORT, lambda tmp: tmp.write_text(report.text("utf-8") + "\n", encoding="utf-8"), "report"
    )
    return report


def _make(
    config: PrepareConfig,
    out: Path,
    sizes: list[int],
    items: list[Item],
    drops: list[Drop],
    report: PrepareReport,
) -> None:
    """Process every photo into temp folders, write each dataset.json, then rename them into place."""
    workers = config.workers or cpu_count()
    report.workers = min(workers, max(1, len(items)))
    report.kinds.update(it.kind for it in items)
    held = config.holdout is not None
    partial = {f: out / f".{f}.partial-{os.getpid()}" for s in sizes for f in _folders(s, held)}
    side = {it.index: held and is_holdout(it.rel, config.holdout) for it in items}  # type: ignore[arg-type]
    try:
        for p in partial.values():
            p.mkdir()
        jobs = [
            Job(
                it,
                tuple(sizes),
                config.image_format,
                config.quality,
                config.square,
                config.max_pixels,
                config.max_bytes,
                tuple(str(partial[_folders(s, held)[-1] if side[it.index] else f"cats-{s}"]) for s in sizes),
            )
            for it in items
        ]
        outcomes = []
        for o in _run_jobs(jobs, report.workers, config.progress):
            if o.fatal:
                raise CatganError(o.fatal)
            outcomes.append(o)
        records, too_small = _collect(outcomes, jobs, sizes, config.image_format, drops, report)
        drops.sort(key=lambda d: d.source)
        report.read = len(items) + sum(1 for d in drops if d.reason in _SCAN_REASONS)
        for d in drops:
            report.dropped[d.reason] += 1
            report.examples.setdefault(d.reason, f"{d.source}: {d.detail}")
        for s in sizes:
            for f in _folders(s, held):
                meta = _meta(config, s, f, records, drops + too_small[s])
                text = json.dumps(meta, indent=1) + "\n"
                atomic_write(
                    partial[f] / "dataset.json", lambda tmp, t=text: tmp.write_text(t), "dataset.json"
                )
            report.kept[s] = len(records[f"cats-{s}"])
            report.too_small[s] = len(too_small[s])
            if held:
                report.held_out[s] = len(records[f"cats-{s}-holdout"])
        for s in sizes:
            for f in reversed(_folders(s, held)):  # cats-S last: its presence means the size is finished
                final = out / f
                if f != f"cats-{s}" and final.exists():  # a held-out folder whose cats-S never appeared
                    shutil.rmtree(final)
                if final.exists():
                    raise CatganError(f"{final} appeared during this run; another run is writing into {out}")
                os.rename(partial[f], final)
            files = [r["file"] for r in records[f"cats-{s}"]]
            write_contact_sheet(out / f"cats-{s}", files, out / f"contact-{s}.png", config.contact)
    finally:
        for p in partial.values():
            shutil.rmtree(p, ignore_errors=True)


def _collect(
    outcomes: list[Outcome],
    jobs: list[Job],
    sizes: list[int],
    fmt: str,
    drops: list[Drop],
    report: PrepareReport,
) -> tuple[dict[str, list[dict]], dict[int, list[Drop]]]:
    """Outcomes in scan order -> records per output folder and too-small drops per size. Of identical
    inputs (same photo and annotation bytes) the first is kept and the others dropped as duplicates."""
    records: dict[str, list[dict]] = {}
    too_small: dict[int, list[Drop]] = {s: [] for s in sizes}
    first: dict[str, str] = {}  # digest -> the input kept
    for o in sorted(outcomes, key=lambda o: o.item.index):
        if o.drop is not None:
            drops.append(o.drop)
            continue
        assert o.record is not None
        dirs = jobs[o.item.index].dirs
        if o.digest in first:
            drops.append(Drop(o.item.rel, "duplicate", f"the same photo and annotation as {first[o.digest]}"))
            for s, d in zip(sizes, dirs, strict=True):
                if s in o.kept:
                    (Path(d) / f"{o.item.name}.{fmt}").unlink(missing_ok=True)
            continue
        first[o.digest] = o.item.rel
        for note in o.record.get("notes", []):
            report.notes[note.split(" (")[0]] += 1
        for s, d in zip(sizes, dirs, strict=True):
            if s in o.kept:
                lm = o.kept[s]
                rec = {"file": f"{o.item.name}.{fmt}", **o.record}
                folder = Path(d).name.split(".partial-")[0][1:]  # .cats-S[-holdout].partial-PID -> cats-S...
                records.setdefault(folder, []).append(rec | ({"landmarks": lm} if lm is not None else {}))
            else:
                too_small[s].append(
                    Drop(o.item.rel, "too small", f"face is {o.too_small:.0f} px, smaller than {s}")
                )
    return records, too_small


def _meta(
    config: PrepareConfig, size: int, folder: str, records: dict[str, list[dict]], drops: list[Drop]
) -> dict:
    """The dataset.json of one output folder."""
    recs = records.setdefault(folder, [])
    recs.sort(key=lambda r: r["file"])
    meta = {
        "format": "catgan-dataset",
        "version": FORMAT_VERSION,
        "created_by": f"catgan {__version__}",
        "image_size": size,
        "image_format": config.image_format,
        "recipe": config.recipe(),
        "coordinates": "landmarks are pixel indices in the stored image (pixel centres at i)",
        "counts": {
            "images": len(recs),
            "too_small": sum(1 for d in drops if d.reason == "too small"),
            "dropped": dict(sorted(Counter(d.reason for d in drops if d.reason != "too small").items())),
        },
        "images": recs,
        "dropped": [d.as_json() for d in sorted(drops, key=lambda d: d.source)],
    }
    if config.holdout is not None:
        train, held = f"cats-{size}", f"cats-{size}-holdout"
        meta["holdout"] = {
            "fraction": config.holdout,
            "rule": "catgan.data.split.is_holdout: sha256 of the photo key below the fraction",
            "side": "holdout" if folder == held else "train",
            "train": train,
            "held_out": held,
            "images": {"train": len(records.get(train, [])), "held_out": len(records.get(held, []))},
        }
    return meta


# Reasons decided from the file names alone: each stands for one input the run read.
_SCAN_REASONS = frozenset({"no photo", "outlier", "known bad", "no annotation"})
