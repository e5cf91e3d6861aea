"""Training speed: catgan's loop against a plain PyTorch DCGAN loop and the bare model step, side by side.

    python benchmarks/train_speed.py                          # dcgan-64 on the CPU
    python benchmarks/train_speed.py --amp --repeats 3        # ... and bf16 autocast beside fp32
    python benchmarks/train_speed.py --device cuda --peak-tflops 989   # thesis-128 on a GPU, as MFU
    python benchmarks/train_speed.py --device cuda --preset cats-128 --batches 128,256  # larger batches
    python benchmarks/train_speed.py --preset projected-64 --batch 32 --repeats 3   # a frozen-part D

Three ways to run the same networks, each for --steps steps after --warmup:
- plain:   pytorch/examples/dcgan's loop: a torch DataLoader over the image files (PIL decode, to tensor,
           normalise, collate, --workers processes), D on real then on fake, G through D.
- bare:    catgan's GAN step object (catgan.training.step.GANStep: D phase, then G phase through a
           frozen D reusing the fakes, EMA) on one batch that stays in memory: the rate of the model
           math alone, the ceiling for any loop.
- catgan:  catgan.training.loop.train() itself on the prepared dataset (uint8 tensor on the device,
           permutation batches, metrics, everything but checkpoints), timed from its own metrics.jsonl.
           --batches times it again at other batch sizes: a network too small to fill a GPU runs about
           as many steps per second at a larger batch, so more images (a change of recipe, not of speed).
GFLOP/s uses the analytic count of catgan.models.model_info (G and D forwards and backwards per image).
A preset whose D has a frozen part (projected-64, projected-128) is timed instead as catgan's GAN step in
fp32 and bf16 autocast, contiguous and channels_last, and as `catgan train` runs it by default and with
--amp (FROZEN_VARIANTS), each with the share of the step spent in the frozen part, measured inside the
same steps (FrozenTimer) beside the share of the step's FLOPs it has (CPU only).
Data: --data, else data/faces/cats-64 when present, else synthetic PNG files written to a temp folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from catgan.config import RunOptions, get_preset
from catgan.data.dataset import image_files, load_dataset, resolve
from catgan.models import build_discriminator, build_generator, model_info
from catgan.models.base import sample_latents
from catgan.runtime import cpu_count
from catgan.training.loop import train
from catgan.training.step import GANStep

REPO = Path(__file__).resolve().parents[1]


# ---- the plain PyTorch loop (pytorch/examples/dcgan, with the image files read by a DataLoader) ----------


class ImageFiles(torch.utils.data.Dataset):
    """Image files -> float (3, H, W) in [-1, 1], decoded per item as torchvision's ImageFolder would."""

    def __init__(self, files: list[Path]):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as im:
            x = torch.from_numpy(np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0)  # (H, W, 3)
        return (x.permute(2, 0, 1) - 0.5) / 0.5  # Normalize((0.5,) * 3, (0.5,) * 3)


def plain_loop(files, preset, device, steps, warmup, workers) -> float:
    """img/s of pytorch/examples/dcgan's training loop (BCE, real label 1, fake label 0)."""
    model, cfg = preset.model, preset.train
    torch.manual_seed(0)
    netG, netD = (
        build_generator(model.generator).to(device),
        build_discriminator(model.discriminator).to(device),
    )
    optD = torch.optim.Adam(netD.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, 0.999))
    optG = torch.optim.Adam(netG.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, 0.999))
    loader = torch.utils.data.DataLoader(
        ImageFiles(files), batch_size=cfg.batch, shuffle=True, num_workers=workers, drop_last=True,
        persistent_workers=workers > 0, pin_memory=device.type == "cuda",
    )  # fmt: skip
    done, t0 = 0, None
    while done < warmup + steps:
        for real in loader:
            if done == warmup:
                _sync(device)
                t0 = time.perf_counter()
            real = real.to(device, non_blocking=True)
            b = real.shape[0]
            # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
            netD.zero_grad()
            errD_real = F.binary_cross_entropy_with_logits(netD(real), torch.ones(b, device=device))
            errD_real.backward()
            fake = netG(sample_latents(model.generator, b, device=device))
            errD_fake = F.binary_cross_entropy_with_logits(netD(fake.detach()), torch.zeros(b, device=device))
            errD_fake.backward()
            optD.step()
            # (2) Update G network: maximize log(D(G(z)))
            netG.zero_grad()
            errG = F.binary_cross_entropy_with_logits(netD(fake), torch.ones(b, device=device))
            errG.backward()
            optG.step()
            done += 1
            if done == warmup + steps:
                break
    _sync(device)
    return steps * cfg.batch / (time.perf_counter() - t0)


# ---- the bare model step: catgan's math on one batch held in memory -------------------------------------


def bare_step(preset, device, steps, warmup, amp=False, compile=False, channels_last=False) -> float:
    """img/s of catgan's GAN step (training.step.GANStep: D phase, G phase through a frozen D reusing
    the fakes, EMA) on one batch held in memory: no data pipeline, no reporting."""
    model, cfg = preset.model, preset.train
    torch.manual_seed(0)
    G = build_generator(model.generator).to(device)
    D = build_discriminator(model.discriminator).to(device).train()
    step = GANStep(G, D, cfg, model.generator, device, amp=amp).wrap(channels_last, compile)
    real = torch.randint(0, 256, (cfg.batch, 3, model.image_size, model.image_size), dtype=torch.uint8)
    real = real.to(device)  # (B, 3, S, S) uint8, as the loop's batches
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        step(real, i, 1.0, train_g=True)
    _sync(device)
    return steps * cfg.batch / (time.perf_counter() - t0)


# ---- catgan's own loop -------------------------------------------------------------------------------------


def catgan_loop(data, preset, device, steps, warmup, amp=False, compile=False, channels_last=None) -> float:
    """img/s of catgan.training.loop.train(), from the timestamps in its metrics.jsonl (after the warm-up)."""
    cfg = dataclasses.replace(preset.train, epochs=10**6, max_steps=warmup + steps)
    with tempfile.TemporaryDirectory() as tmp:
        train(
            data, preset.model, cfg, Path(tmp) / "run",
            RunOptions(
                device=str(device), amp=amp, compile=compile, progress=False, log_every=1, sample_every=0,
                checkpoint_every=0,
                channels_last=channels_last, threads=torch.get_num_threads(),
            ),
            log=lambda _: None,
        )  # fmt: skip
        times = [
            json.loads(line)["time"]
            for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
        ]
    return steps * cfg.batch / (times[warmup + steps - 1] - times[warmup - 1])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- a D with a frozen part (projected-64, projected-128): precision x memory layout, the frozen share ----

# name -> (bf16 autocast of G and D's heads (catgan train --amp), the frozen part's ProjectedDConfig
# frozen_dtype / channels_last (None: the preset's), channels_last of G and the whole D (GANStep.wrap; None:
# catgan train's default, off on the CPU))
FROZEN_VARIANTS = {
    "fp32, contiguous": (False, "float32", False, False),
    "fp32, channels_last": (False, "float32", True, True),
    "bf16, contiguous": (True, "bfloat16", False, False),
    "bf16, channels_last": (True, "bfloat16", True, True),
    "fp32, frozen part bf16 + channels_last": (False, "bfloat16", True, False),
    "catgan train (preset: frozen part auto + channels_last)": (False, None, None, None),
    "catgan train --amp": (True, None, None, None),
}


class FrozenTimer:
    """Seconds a D spends in its frozen part (D.features: the pretrained network and the random mixing),
    forward and backward, inside real GAN steps on the CPU (ops run synchronously there).

    The forward is timed around D.features. The backward to the input (the G phase) runs in one stretch:
    autograd runs ready nodes newest first, so every head's backward precedes it; it begins when the first
    of the features' gradient functions runs (a hook on the features) and ends when the input's does (a
    hook on the input). The D phase's inputs need no gradient: no backward there.
    """

    def __init__(self, D: torch.nn.Module):
        self.seconds = 0.0
        self._features = D.features
        D.features = self._timed  # an instance attribute: D.forward calls it

    def _timed(self, x: torch.Tensor) -> list[torch.Tensor]:
        t0 = time.perf_counter()
        feats = self._features(x)  # four (B, C_i, S / r_i, S / r_i) maps
        self.seconds += time.perf_counter() - t0
        if x.requires_grad:
            began: list[float] = []
            for f in feats:
                f.register_hook(lambda g: began.append(time.perf_counter()) or g)
            x.register_hook(lambda g: self._backward_done(began) or g)
        return feats

    def _backward_done(self, began: list[float]) -> None:
        self.seconds += time.perf_counter() - min(began)


def frozen_variant_step(preset, variant, batch, steps, warmup) -> tuple[float, float]:
    """(img/s, share of the step spent in D's frozen part) of catgan's GAN step (training.step.GANStep)
    for one FROZEN_VARIANTS entry, on one batch held in memory, on the CPU."""
    amp, frozen_dtype, frozen_cl, channels_last = variant
    model, cfg = preset.model, dataclasses.replace(preset.train, batch=batch)
    dcfg = model.discriminator
    if frozen_dtype is not None:
        dcfg = dataclasses.replace(dcfg, frozen_dtype=frozen_dtype, channels_last=frozen_cl)
    torch.manual_seed(0)
    device = torch.device("cpu")
    G, D = build_generator(model.generator), build_discriminator(dcfg).train()
    gan = GANStep(G, D, cfg, model.generator, device, amp=amp).wrap(bool(channels_last))
    timer = FrozenTimer(D)
    real = torch.randint(0, 256, (batch, 3, model.image_size, model.image_size), dtype=torch.uint8)
    for i in range(warmup):
        gan(real, i, 1.0, train_g=True)
    timer.seconds = 0.0
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        gan(real, i, 1.0, train_g=True)
    elapsed = time.perf_counter() - t0
    return steps * batch / elapsed, timer.seconds / elapsed


def frozen_report(preset, batch: int, steps: int, warmup: int, repeats: int, names: list[str]) -> None:
    """The FROZEN_VARIANTS entries `names`, interleaved over `repeats` rounds; medians, then the ratios."""
    variants = {name: FROZEN_VARIANTS[name] for name in names}
    info = model_info(preset.model.generator, preset.model.discriminator)
    flop_share = info["step_d_frozen_gflop"] / info["step_gflop"]
    frozen = info["step_d_frozen_gflop"]
    print(f"# {preset.name}, batch {batch}: {info['step_gflop']:.3f} GFLOP/img/step, {frozen:.3f} of them")
    print(f"# ({flop_share:.0%}) in D's frozen part; {cpu_name()}, torch {torch.__version__},")
    print(f"# {torch.get_num_threads()} threads; {steps} timed step(s) after {warmup} warm-up step(s) per")
    print(f"# variant and round, median of {repeats} interleaved round(s)")
    rates: dict[str, list[float]] = {name: [] for name in variants}
    shares: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):  # interleaved: a busy machine slows every variant alike
        for name, variant in variants.items():
            rate, share = frozen_variant_step(preset, variant, batch, steps, warmup)
            rates[name].append(rate)
            shares[name].append(share)
    print(f"\n| {'variant':<56} | img/s | range (rounds) | frozen share of the step |")
    print(f"|{'-' * 58}|------:|---------------:|-------------------------:|")
    first = next(iter(variants))
    base = statistics.median(rates[first])
    for name in variants:
        rate, share = statistics.median(rates[name]), statistics.median(shares[name])
        spread = f"{min(rates[name]):.1f}-{max(rates[name]):.1f}"
        print(f"| {name:<56} | {rate:5.1f} | {spread:>14} | {share:24.0%} |")
    print()
    for name in list(variants)[1:]:
        print(f"{preset.name} {name} / {first}: {statistics.median(rates[name]) / base:.2f}x")


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def synthetic_dataset(folder: Path, n: int, size: int) -> Path:
    """n random-noise PNGs plus a dataset.json, in the layout `catgan prepare` writes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = []
    for i in range(n):
        name = f"img{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name)
        names.append({"file": name})
    (folder / "dataset.json").write_text(json.dumps({"image_size": size, "images": names}))
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--preset", help="default: dcgan-64 on the CPU, thesis-128 on CUDA")
    p.add_argument("--data", help="prepared dataset folder (default: data/faces/cats-<size> or synthetic)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per variant (cpu 8, cuda 100)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (cpu 2, cuda 20)")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers of the plain loop")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core)")
    p.add_argument("--repeats", type=int, default=1, help="repeat the round; report the median")
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak, for MFU")
    p.add_argument("--amp", action="store_true", help="CPU: also time bf16 autocast (catgan train --amp)")
    p.add_argument("--batch", type=int, default=None, help="a frozen-part D's batch (default: the preset's)")
    p.add_argument("--variants", help="a frozen-part D: ';'-separated FROZEN_VARIANTS names (default: all)")
    p.add_argument(
        "--batches",
        default="",
        help="comma-separated batch sizes to time catgan's loop at besides the preset's (bf16 on CUDA)",
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="CUDA: also time torch.compile (a minute or more of compiling per variant)",
    )
    args = p.parse_args(argv)

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda:  # as catgan train does on CUDA, for every variant alike (it is process-wide)
        torch.backends.cudnn.benchmark = True
    preset = get_preset(args.preset or ("thesis-128" if cuda else "dcgan-64"))
    steps = args.steps or (100 if cuda else 8)
    warmup = args.warmup or (20 if cuda else 2)
    torch.set_num_threads(args.threads or cpu_count())
    if build_discriminator(preset.model.discriminator).frozen_modules():  # projected-64, projected-128
        if cuda:
            p.error(f"{preset.name}: the frozen-part timing runs on the CPU (its hooks time ops as they run)")
        warmup = 1 if args.warmup is None else args.warmup  # a step of these takes seconds on a CPU
        names = [n.strip() for n in args.variants.split(";")] if args.variants else list(FROZEN_VARIANTS)
        if unknown := [n for n in names if n not in FROZEN_VARIANTS]:
            p.error(f"--variants: unknown {unknown}; known: {'; '.join(FROZEN_VARIANTS)}")
        frozen_report(preset, args.batch or preset.train.batch, args.steps or 2, warmup, args.repeats, names)
        return 0
    workers = args.workers if args.workers is not None else min(4, cpu_count())
    size = preset.model.image_size
    given = [b.strip() for b in args.batches.split(",") if b.strip()]
    if not all(b.isdigit() and int(b) > 0 for b in given):
        p.error(f"--batches takes positive batch sizes, got {args.batches!r}")
    batches = [b for b in dict.fromkeys(map(int, given)) if b != preset.train.batch]  # the preset's is timed
    gflop = model_info(preset.model.generator, preset.model.discriminator)["step_gflop"]

    tmp = tempfile.TemporaryDirectory()
    data = Path(args.data) if args.data else REPO / "data" / "faces" / f"cats-{size}"
    if not (data / "dataset.json").is_file():
        data = synthetic_dataset(
            Path(tmp.name) / f"cats-{size}",
            n=(warmup + steps + 1) * max([preset.train.batch, *batches]),
            size=size,
        )
    folder = resolve(data)
    files = image_files(folder)
    images = load_dataset(folder, image_size=size)  # (N, 3, S, S): catgan reads the dataset once, up front

    gpu = torch.cuda.get_device_name(device) if cuda else None
    print(f"# {preset.name}, batch {preset.train.batch}, {gflop:.3f} GFLOP/img/step; {len(files)} images")
    machine = gpu or platform.processor() or "cpu"
    print(f"# {machine}, torch {torch.__version__}, {torch.get_num_threads()} threads, {workers} DataLoader")
    print(f"# workers, {steps} timed steps after {warmup} warm-up steps, median of {args.repeats} round(s)")

    variants: list[tuple[str, callable]] = []
    if not cuda:
        variants += [
            (
                "plain PyTorch loop + DataLoader",
                lambda: plain_loop(files, preset, device, steps, warmup, workers),
            ),
            ("bare model step (no data)", lambda: bare_step(preset, device, steps, warmup)),
            ("catgan train loop", lambda: catgan_loop(images, preset, device, steps, warmup)),
        ]
        if args.amp:
            variants += [
                ("bare model step bf16", lambda: bare_step(preset, device, steps, warmup, amp=True)),
                (
                    "catgan train loop bf16",
                    lambda: catgan_loop(images, preset, device, steps, warmup, amp=True),
                ),
            ]
        base = variants[-1][0]  # the last loop added is what catgan train runs here
    else:
        variants += [
            (
                "plain PyTorch loop + DataLoader fp32",
                lambda: plain_loop(files, preset, device, steps, warmup, workers),
            ),
        ]
        n, w = steps, warmup
        for amp, comp in ((False, False), (True, False), (True, True))[: 3 if args.compile else 2]:
            tag = ("bf16" if amp else "fp32") + (" + compile" if comp else "") + " + channels_last"
            if amp and not comp:
                base = f"catgan train loop {tag}"  # what catgan train --amp runs here
            variants += [
                (f"bare model step {tag}", lambda a=amp, c=comp: bare_step(preset, device, n, w, a, c, True)),
                (
                    f"catgan train loop {tag}",
                    lambda a=amp, c=comp: catgan_loop(images, preset, device, n, w, a, c),
                ),
            ]

    # the batch variants run as catgan train would here: the preset's own batch is the variant `base` above
    for b in batches:
        p_b = dataclasses.replace(preset, train=dataclasses.replace(preset.train, batch=b))
        variants.append(
            (
                f"{base} batch {b}",
                lambda p_b=p_b: catgan_loop(images, p_b, device, steps, warmup, cuda or args.amp),
            )
        )

    results: dict[str, list[float]] = {name: [] for name, _ in variants}
    failed: dict[str, str] = {}  # one variant failing (torch.compile on some versions) keeps the others
    for _ in range(args.repeats):  # interleaved rounds, so a busy machine slows every variant alike
        for name, fn in variants:
            if name in failed:
                continue
            try:
                results[name].append(fn())
            except Exception as err:  # noqa: BLE001 (reported in the table, then the next variant)
                failed[name] = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:100]}"
                results.pop(name)
    print(
        f"\n| {'variant':<44} | img/s | range (rounds) | GFLOP/s |" + (" MFU |" if args.peak_tflops else "")
    )
    print(f"|{'-' * 46}|------:|---------------:|--------:|" + ("----:|" if args.peak_tflops else ""))
    rates = {}
    for name, values in results.items():
        rate = rates[name] = statistics.median(values)
        mfu = f" {rate * gflop / 1e3 / args.peak_tflops:.1%} |" if args.peak_tflops else ""
        spread = f"{min(values):.1f}-{max(values):.1f}"
        print(f"| {name:<44} | {rate:5.1f} | {spread:>14} | {rate * gflop:7.1f} |{mfu}")
    for name, why in failed.items():
        print(f"| {name:<44} | failed: {why} |")
    if not cuda and not failed:
        ratio = rates["catgan train loop"] / rates["bare model step (no data)"]
        plain = rates["catgan train loop"] / rates["plain PyTorch loop + DataLoader"]
        print(
            f"\ncatgan loop / bare model step = {ratio:.1%} (goal >= 90%); catgan / plain loop = {plain:.2f}x"
        )
        if args.amp:
            speedup = rates["catgan train loop bf16"] / rates["catgan train loop"]
            print(f"catgan loop bf16 / fp32 = {speedup:.2f}x")
    for b in batches:
        if f"{base} batch {b}" in rates and base in rates:
            img = rates[f"{base} batch {b}"] / rates[base]
            step = img * preset.train.batch / b
            print(
                f"catgan loop batch {b} / batch {preset.train.batch}: {img:.2f}x img/s, {step:.2f}x steps/s"
            )
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
