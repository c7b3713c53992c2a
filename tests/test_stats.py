"""attnviz stats: streaming aggregates, 1 vs 2 processes (torchrun, gloo), padding, schema,
bad images, resume, tar shards, the HTML rebuilt from stats.json alone."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import descendants_running
from torch.utils.data import DistributedSampler

from attnviz import ParameterError, cli, metrics
from attnviz.datasets import CLASSES, make_shapes
from attnviz.examples import HandCoordAttention, HandMHSA, Net
from attnviz.models import set_preprocess
from attnviz.record import record
from attnviz.stats import SCHEMA, arrays, dataset_stats, read_stats
from attnviz.stats.distributed import UnpaddedSampler
from attnviz.stats.moments import Moments
from attnviz.stats.publish import WORK

jsonschema = pytest.importorskip("jsonschema")
pq = pytest.importorskip("pyarrow.parquet")
wds = pytest.importorskip("webdataset")

MODEL = "demo-cbam"
N_GOOD = 241  # + 1 unreadable file: 242 items, an odd number, so 2 ranks need padding
BAD_NAME = "zz_broken.png"
RUN = dict(batch_size=32, progress=False)


def _png(img: torch.Tensor) -> bytes:
    from PIL import Image

    arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def shapes():
    return make_shapes(N_GOOD, seed=7)


@pytest.fixture(scope="module")
def tree(tmp_path_factory, shapes) -> Path:
    """An ImageFolder tree of generated shapes, one sub-folder per class, one broken file."""
    root = tmp_path_factory.mktemp("tree")
    for i, (img, label) in enumerate(zip(shapes.images, shapes.labels, strict=True)):
        folder = root / CLASSES[int(label)]
        folder.mkdir(exist_ok=True)
        (folder / f"img_{i:04d}.png").write_bytes(_png(img))
    (root / CLASSES[0] / BAD_NAME).write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really" * 10)
    (root / CLASSES[1] / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def one(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("one")
    return dataset_stats(str(tree), MODEL, out, per_image=True, **RUN)


@pytest.fixture(scope="module")
def two(tree, tmp_path_factory) -> Path:
    """The same run as ``one`` with torchrun: 2 processes, gloo, one thread each."""
    out = tmp_path_factory.mktemp("two")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "attnviz", "stats", str(tree), "--model", MODEL, "--out", str(out),
           "--per-image", "--batch-size", "32", "--no-progress"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("attnviz: wrote") == 1, proc.stdout  # rank 0 only
    return out / "stats.json"


def assert_same(a: object, b: object, path: str = "") -> None:
    """Equal documents, arrays to float tolerance (NaN equal to NaN)."""
    if isinstance(a, np.ndarray):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=path)
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    else:
        assert a == b, path


# -- streaming pieces ----------------------------------------------------------------------------
def test_moments_match_numpy_per_group_whatever_the_batches():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(500, 3, 4, generator=g) * 10 + 5
    group = torch.randint(0, 4, (500,), generator=g)
    group[group == 3] = 2  # group 3 stays empty
    m = Moments(4, (3, 4))
    for lo, hi in [(0, 1), (1, 60), (60, 61), (61, 333), (333, 500)]:
        m.update(x[lo:hi], group[lo:hi])
    for k in range(3):
        ref = x[group == k].double().numpy()
        assert m.n[k] == len(ref)
        np.testing.assert_allclose(m.mean[k].numpy(), ref.mean(0), rtol=1e-12)
        np.testing.assert_allclose(m.var[k].numpy(), ref.var(0), rtol=1e-10)
    assert m.n[3] == 0 and torch.isnan(m.var[3]).all()
    total = m.total()
    np.testing.assert_allclose(total.var[0].numpy(), x.double().numpy().var(0), rtol=1e-10)


@pytest.mark.parametrize("n,world", [(242, 2), (10, 3), (2, 4), (7, 1)])
def test_unpadded_sampler_reads_every_item_once(n, world):
    shares = [list(UnpaddedSampler(n, r, world)) for r in range(world)]
    indices = sorted(i for share in shares for _, i in share)
    assert indices == list(range(n))  # no padding, nothing twice
    for r, share in enumerate(shares):
        padded = list(DistributedSampler(range(n), world, r, shuffle=False))
        assert [i for _, i in share] == padded[:len(share)]  # DistributedSampler's order
        assert [p for p, _ in share] == list(range(len(share)))
        assert len(UnpaddedSampler(n, r, world)) == len(share)
    resumed = list(UnpaddedSampler(n, 0, world, start=1))
    assert resumed == shares[0][1:]


def test_vectorised_localisation_equals_a_per_image_loop():
    """metrics.pointing_hits / energy_in_box (batched, on the maps' device) against a plain
    per-image reference, an empty mask included."""
    g = torch.Generator().manual_seed(1)
    maps = torch.rand(16, 8, 8, generator=g)
    objects = torch.zeros(16, 64, 64, dtype=torch.bool)
    for i in range(16):
        y, x = torch.randint(0, 48, (2,), generator=g).tolist()
        objects[i, y:y + 3 + i, x:x + 16] = True
    objects[3] = False  # an empty mask
    up = metrics.upsample(maps, (64, 64))
    grown = torch.nn.functional.max_pool2d(objects[:, None].float(), 7, 1, 3)[:, 0] > 0
    hits, energy = [], []
    for i in range(16):
        r, c = divmod(int(up[i].argmax()), 64)
        hits.append(bool(grown[i, r, c]))
        x0, y0, x1, y1 = metrics.boxes_from_masks(objects[i:i + 1])[0].tolist()
        box = torch.zeros(64, 64, dtype=torch.bool)
        box[y0:y1, x0:x1] = True
        share = (up[i] * box).sum() / up[i].sum()
        energy.append(float(share / box.float().mean().clamp_min(1e-12)))
    assert metrics.pointing_hits(maps, objects).tolist() == hits
    torch.testing.assert_close(metrics.energy_in_box(maps, objects), torch.tensor(energy))


def test_arrays_round_trip():
    x = np.array([[1.5, np.nan], [3.0, -2.0]])
    obj = arrays.encode(x)
    json.dumps(obj)
    np.testing.assert_array_equal(arrays.decode(obj), x.astype(np.float32))
    assert arrays.decode(arrays.encode([3, 4], "int64")).tolist() == [3, 4]


# -- one process vs two -----------------------------------------------------------------------
def test_two_processes_give_the_aggregates_of_one(one, two):
    a, b = read_stats(one), read_stats(two)
    assert b["run"]["world_size"] == 2 and b["run"]["backend"] == "gloo"
    assert a["run"]["world_size"] == 1 and a["run"]["backend"] is None
    for key in ("layers", "classes", "accuracy"):
        assert_same(a[key], b[key], key)
    assert_same(a["data"], b["data"], "data")
    assert a["per_image"]["rows"] == b["per_image"]["rows"]


def test_padding_is_not_double_counted(one, two):
    for path in (one, two):
        doc = read_stats(path)
        d = doc["data"]
        assert (d["n_items"], d["n_images"], d["n_bad"]) == (N_GOOD + 1, N_GOOD, 1)
        assert int(doc["classes"]["images"].sum()) == N_GOOD
        for layer in doc["layers"]:
            assert int(layer["moments"]["features"]["n"][0]) == N_GOOD, layer["key"]
        rows = sum(pq.ParquetFile(path.parent / f).metadata.num_rows
                   for f in doc["per_image"]["files"])
        assert rows == doc["per_image"]["rows"] == N_GOOD * len(doc["layers"])
    images = [pq.read_table(two.parent / f, columns=["image", "layer"])
              for f in read_stats(two)["per_image"]["files"]]
    names = [n for t in images for n, lay in zip(t["image"].to_pylist(), t["layer"].to_pylist(),
                                                 strict=True) if lay == "layer3.0.attn.spatial"]
    assert len(names) == len(set(names)) == N_GOOD


def test_the_aggregates_are_the_recorded_weights(one, tree, shapes):
    """Class means of s(c), accuracy and the mean mask against a plain recorded pass."""
    import attnviz

    doc = read_stats(one)
    names = sorted(CLASSES)  # ImageFolder: the sub-folders in sorted order
    assert doc["classes"]["names"] == names and doc["classes"]["mapping"] == "by name"
    model = attnviz.load_model(MODEL, device="cpu")
    files = sorted(tree.glob("*/img_*.png"))
    x = torch.stack([attnviz.load_image(p, size=64) for p in files])
    labels = torch.tensor([names.index(p.parent.name) for p in files])
    outputs = torch.tensor([CLASSES.index(p.parent.name) for p in files])
    with torch.no_grad(), record(model) as rec:
        logits = model(x)
    layers = {(layer["key"], layer["kind"]): layer for layer in doc["layers"]}
    s = rec.channel["layer4.1.attn.channel"].double()
    got = layers["layer4.1.attn.channel", "channel"]["moments"]["s"]
    for k in range(len(CLASSES)):
        np.testing.assert_allclose(got["mean"][k], s[labels == k].mean(0), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got["var"][k], s[labels == k].var(0, correction=0),
                                   rtol=1e-3, atol=1e-6)
    mask = rec.spatial["layer3.0.attn.spatial"]
    np.testing.assert_allclose(layers["layer3.0.attn.spatial", "spatial"]["moments"]["mask"]
                               ["mean"][0], mask.mean(0), rtol=1e-4, atol=1e-5)
    assert doc["accuracy"]["top1"] == pytest.approx(metrics.accuracy(logits, outputs))


def test_bad_image_is_listed_and_scan_skips_are_reported(one):
    d = read_stats(one)["data"]
    assert [Path(b["image"]).name for b in d["bad"]] == [BAD_NAME]
    assert "truncated" in d["bad"][0]["reason"] or "damaged" in d["bad"][0]["reason"]
    assert any(p.endswith("notes.txt") for p, _ in d["skipped"])


def test_stats_json_follows_its_schema(one, two):
    validator = jsonschema.Draft202012Validator(SCHEMA)
    validator.check_schema(SCHEMA)
    for path in (one, two):
        validator.validate(json.loads(path.read_text()))
    doc = json.loads(one.read_text())
    del doc["layers"][0]["moments"]
    assert not validator.is_valid(doc)


def test_html_rebuilds_from_stats_json_alone(one, tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(one, alone / "stats.json")
    assert cli.main(["stats-html", str(alone / "stats.json")]) == 0
    page = (alone / "stats.html").read_text()
    for text in ("Class-wise excitation", "Spatial masks", "layer3.0.attn.spatial", "circle",
                 BAD_NAME, "data:image/png;base64,"):
        assert text in page, text
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")
    assert sorted(p.name for p in alone.iterdir()) == ["stats.html", "stats.json"]


# -- resume, tar shards, ground truth, attention maps ---------------------------------------------
def test_interrupted_run_leaves_no_results_and_resumes_to_the_same(tree, one, tmp_path):
    out = tmp_path / "resumed"

    def stop_after(n: int):
        def stop(done: int) -> None:
            if done >= n:
                raise KeyboardInterrupt

        return stop

    with pytest.raises(KeyboardInterrupt):
        dataset_stats(str(tree), MODEL, out, per_image=True, save_every=0,
                      on_batch=stop_after(96), **RUN)
    assert not (out / "stats.json").exists() and not (out / "per_image").exists()
    assert list((out / WORK).glob("rank-00000-of-00001.pt"))
    path = dataset_stats(str(tree), MODEL, out, per_image=True, resume=True, **RUN)
    a, b = read_stats(one), read_stats(path)
    assert b["run"]["resumed"] and not (out / WORK).exists()
    for key in ("layers", "classes", "accuracy", "data"):
        assert_same(a[key], b[key], key)
    assert b["per_image"]["rows"] == a["per_image"]["rows"]
    with pytest.raises(KeyboardInterrupt):  # interrupted again; its checkpoint is demo-cbam's
        dataset_stats(str(tree), MODEL, out, save_every=0, on_batch=stop_after(1), **RUN)
    assert (out / "stats.json").read_text() == path.read_text()  # the last complete run's
    with pytest.raises(ParameterError, match="cannot resume: the saved run differs in model"):
        dataset_stats(str(tree), "demo-se", out, resume=True, **RUN)


def test_tar_shards_equal_the_image_folder(tree, one, tmp_path):
    files = sorted(tree.glob("*/*.png"))
    for s in range(3):
        with wds.TarWriter(str(tmp_path / f"part-{s}.tar")) as w:
            for p in files[s::3]:
                sample = {"__key__": f"{p.parent.name}_{p.stem}", "png": p.read_bytes()}
                sample["cls"] = str(CLASSES.index(p.parent.name)).encode()
                w.write(sample)
    path = dataset_stats(str(tmp_path / "part-{0..2}.tar"), MODEL, tmp_path / "out", **RUN)
    a, b = read_stats(one), read_stats(path)
    assert b["data"]["kind"] == "webdataset" and b["data"]["n_bad"] == 1
    assert BAD_NAME.removesuffix(".png") in b["data"]["bad"][0]["image"]
    assert b["classes"]["names"] == list(CLASSES)  # cls is the model's output index
    assert_same(a["accuracy"], b["accuracy"], "accuracy")
    assert_same(a["layers"], in_class_order(b["layers"], CLASSES, a["classes"]["names"]))


def in_class_order(layers: list[dict], names: Sequence[str], order: Sequence[str]) -> list[dict]:
    """``layers`` with every per-class array reordered from ``names`` to ``order``."""
    idx = [list(names).index(n) for n in order]
    out = []
    for layer in layers:
        moments = {k: {**m, **{f: m[f][idx] for f in ("n", "mean", "var")}}
                   if m["groups"] > 1 else m for k, m in layer["moments"].items()}
        out.append({**layer, "moments": moments})
    return out


def test_shapes_ground_truth_matches_evaluate(tmp_path):
    from attnviz import evaluate, load_model

    path = dataset_stats("shapes:40", MODEL, tmp_path, **RUN)
    doc = read_stats(path)
    assert doc["data"]["ground_truth"]
    scores = {s.name: s for s in evaluate.evaluate(load_model(MODEL, device="cpu"),
                                                  make_shapes(40, seed=1)).layers}
    for layer in doc["layers"]:
        if layer["kind"] == "spatial":
            f = dict(zip(layer["features"], layer["moments"]["features"]["mean"][0], strict=True))
            assert f["pointing"] == pytest.approx(scores[layer["key"]].pointing, abs=1e-6)
            assert f["energy"] == pytest.approx(scores[layer["key"]].energy_raw, rel=1e-4)


def test_attention_maps_entropy_and_distance_per_head(tmp_path):
    torch.manual_seed(0)
    net = Net(HandMHSA(16), HandCoordAttention(16)).eval()
    set_preprocess(net, 16, (0.5,) * 3, (0.25,) * 3)
    path = dataset_stats("shapes:24", net, tmp_path, batch_size=10, progress=False)
    doc = read_stats(path)
    kinds = {layer["key"]: layer for layer in doc["layers"]}
    assert {layer["kind"] for layer in doc["layers"]} == {"attention", "gate"}
    att = kinds["layer1.0"]
    x = torch.stack([make_shapes(24, seed=1, size=16).images])[0]
    with torch.no_grad(), record(net) as rec:
        net((x - 0.5) / 0.25)
    a = rec.attention["layer1.0"].double()  # (B, heads, 256, 256)
    ent = -(a * a.clamp_min(1e-12).log()).sum(-1) / math.log(256)
    ys, xs = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
    pos = torch.stack([ys.flatten(), xs.flatten()], 1).double().add(0.5)  # key-grid cells
    dist = torch.cdist(pos, pos)
    mean_dist = (a * dist).sum(-1)
    np.testing.assert_allclose(att["moments"]["head_entropy"]["mean"][0], ent.mean((0, 2)),
                               rtol=1e-4)
    np.testing.assert_allclose(att["moments"]["head_distance"]["mean"][0],
                               mean_dist.mean((0, 2)), rtol=1e-4)
    assert att["q_grid"] == [16, 16] and doc["classes"]["grouping"] == "label"
    assert "Attention maps" in (tmp_path / "stats.html").read_text()


@pytest.mark.parametrize("args,expect", [
    (["shapes:0"], "shapes:N must be an integer >= 1"),
    (["shapes:3", "more"], "only data argument"),
    (["nowhere/"], "no images found"),
    (["a.tar", "b.png"], "cannot be mixed"),
    (["missing-{0..1}.tar"], "no tar shards"),
    (["shapes:3", "--batch-size", "0"], "batch_size"),
    (["shapes:3", "--save-every", "-1"], "save_every"),
    (["shapes:3", "--layers", "nothing*"], "matches none"),
])
def test_bad_command_lines_are_one_line_errors(args, expect, tmp_path, capsys):
    assert cli.main(["stats", *args, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attnviz: error: ") and "\n" not in err and expect in err, err
    assert not (tmp_path / "o" / "stats.json").exists()


def test_missing_extra_is_one_line(monkeypatch, tmp_path):
    from attnviz import MissingDependencyError
    from attnviz.engine.shards import TarShards
    from attnviz.stats.perimage import RowWriter

    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "webdataset", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'attnviz\[stats\]'"):
        RowWriter(tmp_path, 0)
    with pytest.raises(MissingDependencyError, match=r"pip install 'attnviz\[stats\]'"):
        TarShards(["a.tar"], 64, 5)



@pytest.mark.slow
def test_workers_die_with_a_killed_launcher(tmp_path):
    """kill -9 of torchrun: its workers get SIGTERM from the kernel and stop; nothing is
    published."""
    psutil = pytest.importorskip("psutil")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", "-m", "attnviz", "stats", "shapes:200000", "--model", MODEL, "--out", str(out),
           "--batch-size", "32", "--no-progress"]
    launcher = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    workers: list = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out / ".attnviz-stats-partial").exists():
            time.sleep(0.5)
        workers = descendants_running(psutil.Process(launcher.pid), "attnviz")
        assert len(workers) == 2, [p.cmdline() for p in workers]
        launcher.kill()
        launcher.wait(timeout=30)
        gone, alive = psutil.wait_procs(workers, timeout=30)
        assert alive == [], [p.pid for p in alive]
        assert not (out / "stats.json").exists()
    finally:  # whatever happened, leave no process behind
        launcher.kill()
        for p in [*workers, *psutil.Process().children(recursive=True)]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
