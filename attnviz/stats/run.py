"""``dataset_stats``: attention statistics over a whole dataset, on one process or many.

    path = dataset_stats("shapes:2000", "demo-cbam", "out/")     # out/stats.json, stats.html
    torchrun --standalone --nproc_per_node 2 -m attnviz stats shapes:2000 --out out/

Each process reads its share of the data (:class:`~attnviz.stats.distributed.UnpaddedSampler`
for files and shapes, every world-th shard for tar files), keeps its partial aggregates on its
device, and at the end the partial sums are merged with collectives; rank 0 writes the results.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..checks import (
    MAX_BATCH_SIZE,
    cap_workers,
    check_images_memory,
    check_input_size,
    check_int,
    check_out_dir,
)
from ..engine import is_random, load_for_run, probe
from ..engine.sources import Source, collate, open_source
from ..errors import AttnvizError, ParameterError
from ..models import resolve_device
from ..models.preprocess import InputSpec, check_class_names, class_names, input_spec
from ..outputs import Output, OutputSelector
from ..terminal import text_name
from ..threads import using as using_threads
from . import checkpoint, document, publish
from .aggregate import ALL_IMAGES, Aggregate, ClassInfo, spec_from_json
from .checkpoint import Progress
from .distributed import Dist, UnpaddedSampler
from .html import write_html
from .loop import Inputs, LoopOptions, Pass, progress_bar
from .perimage import FEATURES, RowWriter

T = TypeVar("T")


def class_info(source: Source, net: nn.Module, outputs: int | None) -> ClassInfo:
    """Groups for the per-class statistics and how labels map to the model's outputs
    (``outputs`` None: the model makes no class prediction; groups are the data's labels, or
    one group of all images)."""
    if outputs is None:
        if source.classes is not None:
            return ClassInfo(tuple(source.classes), "label")
        return ClassInfo((ALL_IMAGES,), "single")
    check_class_names(net, outputs)
    model_names = class_names(net) or [str(i) for i in range(outputs)]
    if len(model_names) != outputs:
        model_names = [str(i) for i in range(outputs)]
    if source.kind == "webdataset":
        return ClassInfo(tuple(model_names), "label", tuple(range(outputs)),
                         "cls is the output index")
    if source.classes is None:
        return ClassInfo(tuple(model_names), "prediction")
    names = tuple(source.classes)
    if set(names) <= set(model_names):
        return ClassInfo(names, "label", tuple(model_names.index(n) for n in names), "by name")
    if len(names) == outputs:
        return ClassInfo(names, "label", tuple(range(outputs)), "sorted class order")
    return ClassInfo(names, "label")


def on_main(dist: Dist, fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0, its result (or its AttnvizError) on every process."""
    result: Any = None
    error: AttnvizError | None = None
    if dist.main:
        try:
            result = fn()
        except AttnvizError as e:
            error = e
    result, error = dist.broadcast((result, error))
    if error is not None:
        raise error
    return result


def on_each(dist: Dist, fn: Callable[[], T]) -> T:
    """``fn()`` on every process; when it fails on any of them, every process raises the
    first failure (so rank 0 reports an error that only another process met)."""
    result: Any = None
    error: AttnvizError | None = None
    try:
        result = fn()
    except AttnvizError as e:
        error = e
    failed = [e for e in dist.gather(error) if e is not None]
    if failed:
        raise failed[0]
    return result


def make_loader(source: Source, dist: Dist, progress: Progress, size: int, outputs: int | None,
                batch_size: int, workers: int, pin: bool) -> tuple[DataLoader, int | None]:
    """This process's DataLoader and its number of items (None: not known, tar shards)."""
    common = dict(batch_size=batch_size, collate_fn=collate, pin_memory=pin)
    if source.dataset is not None:
        sampler = UnpaddedSampler(len(source.dataset), dist.rank, dist.world,  # type: ignore
                                  start=progress.done.get("", 0))
        loader = DataLoader(source.dataset, sampler=sampler, num_workers=workers, **common)
        return loader, sampler.real()
    from ..engine.shards import TarShards

    shards = (source.shards or [])[dist.rank::dist.world]
    data = TarShards(shards, size, outputs, progress.done)
    return DataLoader(data, num_workers=min(workers, len(shards)), **common), None


@dataclass
class Job:
    """What one run computes (the arguments of :func:`dataset_stats`, checked)."""

    data: list[str]
    model: str | nn.Module
    out: Path
    model_options: dict[str, Any]
    output: Any
    random_weights: bool
    batch_size: int
    workers: int
    per_image: bool
    resume: bool
    loop: LoopOptions


def dataset_stats(
    data: str | Sequence[str],
    model: str | nn.Module = "demo-cbam",
    out: str | os.PathLike = "stats",
    *,
    model_options: dict[str, Any] | None = None,
    output: Any = None,
    random_weights: bool = False,
    layers: str | None = None,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "auto",
    threads: int | None = None,
    amp: bool = False,
    per_image: bool = False,
    resume: bool = False,
    save_every: float = 300.0,
    progress: bool = True,
    on_batch: Callable[[int], None] | None = None,
) -> Path:
    """Attention statistics of ``model`` over ``data``; returns ``OUT/stats.json``.

    Args:
        data: an ImageFolder tree, image files / folders / globs, ``"shapes:N"`` or tar shards.
        model: anything ``--model`` accepts, or a model; ``model_options`` are passed to
            :func:`attnviz.load_model` (``checkpoint``, ``input_size``, ``labels``, ...).
        output: which part of the model's output holds the logits (see
            :func:`attnviz.outputs.interpret`; None: automatic). Without class prediction the
            groups are the data's labels, or one group of all images.
        random_weights: allow an architecture without trained weights (stats.html says so).
        layers: only attention modules whose name matches (``"layer4*"``).
        batch_size, workers: of each process's DataLoader.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` (under torchrun: the process's local GPU).
        threads: CPU threads of each process (None: the free cores shared among the run's
            processes on this machine, at least 1; see :mod:`attnviz.threads`).
        amp: mixed precision (fp16 on CUDA, bf16 on CPU).
        per_image: also write ``OUT/per_image/rank-RRRRR.parquet``.
        resume: continue from the checkpoints of an interrupted run into ``out``.
        save_every: seconds between checkpoints (0: after every batch).
        progress: show a progress bar (rank 0).
        on_batch: called after every batch with the number of items this process has done.
    """
    check_int("batch_size", batch_size, 1, MAX_BATCH_SIZE)
    if isinstance(save_every, bool) or not isinstance(save_every, (int, float)) \
            or not 0 <= save_every < float("inf"):
        raise ParameterError(f"save_every must be a number of seconds >= 0, got {save_every!r}")
    job = Job([data] if isinstance(data, str) else [os.fspath(d) for d in data], model,
              check_out_dir(out), dict(model_options or {}), OutputSelector.parse(output),
              random_weights, batch_size, cap_workers(workers),
              per_image, resume, LoopOptions(layers, amp, float(save_every), progress, on_batch))
    dev = resolve_device(device)
    dist = Dist.start(dev.type)
    try:
        if dev.type == "cuda" and dist.world > 1 and dev.index is not None:
            raise ParameterError(f"--device {device} under torchrun would put every process on "
                                 "one GPU: pass --device cuda (each process takes its local GPU)")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", dist.local_rank)
        job.loop.progress = job.loop.progress and dist.main
        local = int(os.environ.get("LOCAL_WORLD_SIZE", dist.world) or 1)
        with using_threads(threads, share=local):
            return _run(dist, dev, job)
    finally:
        dist.close()


@dataclass
class Setup:
    """The model and data of a run, checked before its output folder is locked."""

    net: nn.Module
    name: str
    spec: InputSpec
    output: Output
    source: Source
    classes: ClassInfo
    fingerprint: str


def _setup(dist: Dist, dev: torch.device, job: Job) -> Setup:
    net, name = load_for_run(job.model, dev, random_weights=job.random_weights,
                             **job.model_options)
    if dev.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    spec = input_spec(net)
    check_input_size(spec.size)
    output = probe(net, job.loop.layers, job.output)
    source = on_main(dist, lambda: open_source(job.data, spec.size))
    batch = min(job.batch_size, source.n or job.batch_size)  # images held at once
    check_images_memory(f"--batch-size {batch}", batch, spec.size)
    classes = class_info(source, net, output.classes)
    fp = checkpoint.fingerprint(data=source.spec, kind=source.kind, n=source.n, model=name,
                                files=source.digest(),
                                options={k: v for k, v in job.model_options.items()
                                         if v is not None},  # the CLI's unset ones: None
                                layers=job.loop.layers, world=dist.world,
                                classes=classes.names, amp=job.loop.amp, device=dev.type)
    return Setup(net, name, spec, output, source, classes, fp)


def _run(dist: Dist, dev: torch.device, job: Job) -> Path:
    setup = _setup(dist, dev, job)
    pub = publish.publisher(job.out, job.resume)  # rank 0 holds the output folder's lock

    def enter() -> tuple[Path, bool]:
        pub.__enter__()
        return pub.stage, pub.resumed

    try:
        work, resumed = on_main(dist, enter)
        return _pass(dist, dev, job, setup, work, resumed, pub)
    finally:
        if dist.main:
            pub.__exit__(None, None, None)


def _pass(dist: Dist, dev: torch.device, job: Job, setup: Setup, work: Path, resumed: bool,
          pub: publish.Publisher) -> Path:
    net, name, spec, source, classes = (setup.net, setup.name, setup.spec, setup.source,
                                        setup.classes)
    fp, layers, amp = setup.fingerprint, job.loop.layers, job.loop.amp
    outputs, kind = setup.output.classes, setup.output
    agg = Aggregate(classes, dev, source.ground_truth)
    ckpt_path = checkpoint.checkpoint_path(work, dist.rank, dist.world)
    items = len(range(dist.rank, source.n, dist.world)) if source.n is not None else None
    saved = on_each(dist, lambda: checkpoint.load(ckpt_path, fp, items) if resumed else None)
    prog = Progress()
    if saved is not None:
        prog, state = saved
        on_each(dist, lambda: checkpoint.restore(agg, state, prog, ckpt_path))
    rows = RowWriter(work / "parts", dist.rank, prog.parts) if job.per_image else None
    loader, total = make_loader(source, dist, prog, spec.size, outputs, job.batch_size,
                                job.workers, dev.type == "cuda")
    bar = progress_bar(total, prog.n_seen, dist.world, job.loop.progress)
    try:
        with warnings.catch_warnings():  # a process whose images were all unreadable
            warnings.filterwarnings("ignore", message="no forward pass")
            Pass(net, Inputs(net, dev, job.output), agg, prog, rows, job.loop, ckpt_path, fp).run(
                loader, bar)
    finally:
        bar.close()
    row_file = rows.finish(work / publish.PER_IMAGE) if rows is not None else None
    for specs in dist.gather([s.to_json() for s in agg.specs()]):
        for d in specs:
            agg.layer(spec_from_json(d))
    sums, moments = agg.tensors()
    dist.sum_(sums)
    dist.merge_moments_(moments)
    everyone = dist.gather({**asdict(prog), "rows": _rows(row_file), "resumed": saved is not None})
    if dist.main:
        run = {"world_size": dist.world, "backend": dist.backend, "device": str(dev), "amp": amp,
               "batch_size": job.batch_size, "workers": job.workers, "layers": layers}
        model_json = {"name": name, "checkpoint": _text(job.model_options.get("checkpoint")),
                      "input_size": spec.size, "mean": spec.mean, "std": spec.std,
                      "outputs": outputs, "output_kind": kind.kind,
                      "random_weights": is_random(net)}
        doc = document.build(agg, model=model_json, data=_data_json(source, everyone),
                             run={**run, **_timing(agg, everyone)},
                             per_image=_rows_json(everyone) if job.per_image else None)
        publish.write_json(work / "stats.json", doc)
        write_html(work / "stats.json", work / "stats.html")
        pub.publish()
    dist.barrier()
    return job.out / "stats.json"


def _text(value: Any) -> str | None:
    return None if value is None else os.fspath(value)


def _rows(path: Path | None) -> int:
    if path is None:
        return 0
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def _data_json(source: Source, everyone: list[dict]) -> dict[str, Any]:
    bad = sorted((b for p in everyone for b in p["bad"]), key=lambda b: b[0])
    n_bad = sum(p["n_bad"] for p in everyone)
    n_items = sum(p["n_seen"] for p in everyone)
    return {"kind": source.kind, "spec": [text_name(s) for s in source.spec],
            "n_items": n_items, "n_images": n_items - n_bad, "n_bad": n_bad,
            "bad": [{"image": text_name(n), "reason": text_name(r)} for n, r in bad],
            "skipped": [[text_name(p), text_name(r)]
                        for p, r in source.skipped[:checkpoint.MAX_LISTED]],
            "ground_truth": source.ground_truth}


def _timing(agg: Aggregate, everyone: list[dict]) -> dict[str, Any]:
    seconds = max(p["seconds"] for p in everyone)
    images = float(agg.counts["images"].sum().item())
    return {"seconds": round(seconds, 3), "images_per_s": round(images / seconds, 2)
            if seconds > 0 else 0.0, "resumed": any(p["resumed"] for p in everyone)}


def _rows_json(everyone: list[dict]) -> dict[str, Any]:
    files = [f"{publish.PER_IMAGE}/rank-{r:05d}.parquet" for r in range(len(everyone))]
    cols = ["image", "index", "rank", "label", "pred", "prob", "layer", "kind", *FEATURES]
    return {"files": files, "rows": sum(p["rows"] for p in everyone), "columns": cols}
