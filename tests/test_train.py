"""Weakly supervised training: the loss, what trains, a run end to end, exact resume, DDP on gloo."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from _vpr_data import write_street

from netvlad_gui.cli.training import add_train_commands
from netvlad_gui.core.config import ExtractConfig, InitConfig, ModelConfig
from netvlad_gui.core.model.checkpoint import load_checkpoint
from netvlad_gui.core.model.initialise import initialise_from_images
from netvlad_gui.core.model.network import build_model
from netvlad_gui.core.training.datasets import DataSpec, SplitConfig
from netvlad_gui.core.training.train import (
    TrainConfig,
    TrainConfigError,
    TrainError,
    _Trainer,
    read_train_state,
    resume_config,
    set_trainable,
    train,
    triplet_loss,
    triplet_terms,
)

REPO = Path(__file__).resolve().parents[1]


# --- the loss -------------------------------------------------------------------------------


def test_triplet_loss_hand_computed() -> None:
    q = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[[0.8, 0.6], [0.6, 0.8]]])  # d² 0.4 and 0.8: min 0.4
    neg = torch.tensor([[[0.0, 1.0], [0.8, -0.6]]])  # d² 2.0 and 0.4
    # squared (the paper): max(0.4 + 0.1 - 2, 0) + max(0.4 + 0.1 - 0.4, 0) = 0.1
    assert triplet_loss(q, pos, neg, margin=0.1).item() == pytest.approx(0.1, abs=1e-6)
    terms = triplet_terms(q, pos, neg, margin=0.1)
    assert terms.tolist() == [[0.0, pytest.approx(0.1, abs=1e-6)]]
    # unsquared (the ports): d_p = d_n2 = sqrt(0.4), margin sqrt(0.1)
    loss = triplet_loss(q, pos, neg, margin=math.sqrt(0.1), squared=False)
    assert loss.item() == pytest.approx(math.sqrt(0.1), abs=1e-6)
    # masks: the hard negative masked out, the close positive masked out
    mask = torch.tensor([[True, False]])
    assert triplet_loss(q, pos, neg, margin=0.1, neg_mask=mask).item() == 0.0
    pmask = torch.tensor([[False, True]])  # only p2 (d² 0.8): 0.8 + 0.1 - 0.4 = 0.5
    assert triplet_loss(q, pos, neg, margin=0.1, pos_mask=pmask).item() == pytest.approx(0.5)


def test_default_margins_follow_the_loss() -> None:
    assert TrainConfig(data=DataSpec(data="x")).mining.effective_margin == 0.1
    assert TrainConfig(
        data=DataSpec(data="x"), loss="unsquared"
    ).mining.effective_margin == pytest.approx(math.sqrt(0.1))
    with pytest.raises(TrainConfigError, match="loss"):
        TrainConfig(data=DataSpec(data="x"), loss="cosine").validate()


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_only_the_last_block_and_netvlad_train_by_default() -> None:
    alex = build_model(ModelConfig(backbone="alexnet", num_clusters=4), "none")
    set_trainable(alex, "last_block")
    assert _trainable(alex) == {
        "backbone.10.weight",
        "backbone.10.bias",
        "pool.centroids",
        "pool.conv.weight",
    }  # conv5; the assignment bias stays 0
    mnv2 = build_model(ModelConfig(num_clusters=4), "none")
    set_trainable(mnv2, "last_block", assignment_bias=True)
    names = _trainable(mnv2)
    assert "pool.conv.bias" in names and all(n.startswith(("backbone.13.", "pool.")) for n in names)
    res = build_model(ModelConfig(backbone="resnet18", pooling="fmax"), "none")
    set_trainable(res, "last_block")
    assert _trainable(res) and all(n.startswith("backbone.layer4.") for n in _trainable(res))
    set_trainable(alex, "pooling")
    assert _trainable(alex) == {"pool.centroids", "pool.conv.weight"}


# --- a tiny street ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def street(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("street") / "photos"
    write_street(folder, np.arange(44) * 4.0, period_m=60, unique=0.25, noise=10)
    return folder


def _cfg(folder: Path, **kw) -> TrainConfig:
    base = {
        "data": DataSpec(data=str(folder)),
        "model": "alexnet-netvlad",
        "backbone_weights": "none",
        "num_clusters": 4,
        "epochs": 2,
        "image_size": 96,
        "num_workers": 0,
        "cache_batch_size": 16,
        "neg_samples": 40,
        "neg_per_tuple": 4,
        "lr": 1e-3,
        "whitening_dim": 16,
        "init": InitConfig(num_images=12),  # as --init-images 12
        "split": SplitConfig(fractions=(0.6, 0.4, 0.0)),
    }
    base.update(kw)
    return TrainConfig(**base)


def test_a_few_steps_lower_the_loss(street: Path) -> None:
    torch.manual_seed(0)
    paths = sorted(street.glob("*.jpg"))
    model = build_model(ModelConfig(backbone="alexnet", num_clusters=4), "none")
    ecfg = ExtractConfig(image_size=96, num_workers=0)
    initialise_from_images(model, paths, InitConfig(num_images=12, descriptors_per_image=10), ecfg)
    from netvlad_gui.core.photos.images import load_tensor

    # two tuples: photo 10 (40 m) with 11 (44 m) and negatives a period (60 m) away or more
    images = torch.stack([load_tensor(paths[i], 96) for i in (10, 11, 25, 40, 30, 31, 15, 1)])
    params = set_trainable(model, "last_block")
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    losses = []
    for _ in range(6):
        d = model(images)
        q, pos = d[[0, 4]], d[[1, 5]][:, None]
        neg = torch.stack([d[[2, 3]], d[[6, 7]]])
        loss = triplet_loss(q, pos, neg, margin=0.1)
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[0] > 0 and losses[-1] < 0.8 * losses[0], losses


def _run_cli(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    add_train_commands(ap.add_subparsers(dest="command", required=True))
    args = ap.parse_args(argv)
    return args.func(args)


TINY = [
    "--model",
    "alexnet-netvlad",
    "--backbone-weights",
    "none",
    "--num-clusters",
    "4",
    "--image-size",
    "96",
    "--workers",
    "0",
    "--cache-batch-size",
    "16",
    "--neg-samples",
    "40",
    "--neg-per-tuple",
    "4",
    "--lr",
    "1e-3",
    "--whitening-dim",
    "16",
    "--init-images",
    "12",
]


def test_train_cli_json_progress_and_checkpoints(street: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    assert (
        _run_cli(
            [
                "train",
                "--data",
                str(street),
                "--out",
                str(run),
                "--epochs",
                "2",
                "--split-fractions",
                "0.6,0.4,0",
                "--json-progress",
                *TINY,
            ]
        )
        == 0
    )
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "init" and kinds[-1] == "done"
    assert kinds.index("start") < kinds.index("step") < kinds.index("val") < kinds.index("epoch")
    assert kinds.count("epoch") == kinds.count("val") == 2
    step = next(e for e in events if e["event"] == "step")
    assert {"epoch", "step", "steps", "loss", "lr", "tuples"} <= set(step) and step["lr"] == 1e-3
    val = next(e for e in events if e["event"] == "val")
    assert {"recall@1", "recall@5", "recall@10", "recall@20", "best"} <= set(val)
    for name in ("init.pt", "last.pt", "best.pt", "model.pt"):
        assert (run / name).is_file(), name
    final = load_checkpoint(run / "model.pt")  # weights_only load
    assert final.whiten is not None and final.config.whitening_dim == 16
    assert final.meta["training"]["epochs"] == 2 and final.is_initialised
    cfg, state = read_train_state(run)
    assert state["epoch"] == 2 and cfg.data.data == str(street.absolute())
    assert state["optimizer"]["state"] and state["neg_cache"].shape[1] == 10
    # the run folder stands for its model.pt in `netvlad eval`
    assert (
        _run_cli(
            [
                "eval",
                "--model",
                str(run),
                "--data",
                str(street),
                "--image-size",
                "96",
                "--split-fractions",
                "0.6,0.4,0",
                "--split",
                "val",
                "--workers",
                "0",
                "-q",
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["queries"] == val["queries"] > 0


def test_resume_continues_exactly(street: Path, tmp_path: Path, monkeypatch) -> None:
    import netvlad_gui.core.training.train as train_mod

    kw = {"lr_step_epochs": 1, "cache_refresh_queries": 12, "batch_size": 4}
    steps_a: list[dict] = []
    train(
        _cfg(street, epochs=2, **kw),
        tmp_path / "a",
        progress=lambda e: steps_a.append(e) if e["event"] == "step" else None,
    )
    inits = []
    real_init = train_mod.initialise_from_images
    monkeypatch.setattr(
        train_mod, "initialise_from_images", lambda *a, **k: inits.append(1) or real_init(*a, **k)
    )
    train(_cfg(street, epochs=1, **kw), tmp_path / "b")
    torch.manual_seed(1234)  # a resumed process starts from other RNG states
    np.random.seed(99)
    steps_b: list[dict] = []
    res = train(
        _cfg(street, epochs=2, **kw),
        tmp_path / "b",
        resume=True,
        progress=lambda e: steps_b.append(e) if e["event"] == "step" else None,
    )
    assert inits == [1]  # k-means ran once, before the first epoch
    second_a = [e for e in steps_a if e["epoch"] == 2]
    assert [e["step"] for e in steps_b] == [e["step"] for e in second_a]
    for ea, eb in zip(second_a, steps_b, strict=True):
        assert eb["loss"] == pytest.approx(ea["loss"], rel=1e-5, abs=1e-7)
        assert eb["lr"] == ea["lr"] == pytest.approx(1e-3 / 2)
    a = load_checkpoint(tmp_path / "a" / "last.pt").state_dict()
    b = load_checkpoint(tmp_path / "b" / "last.pt").state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=1e-5)
    assert len(res.history) == 2


def test_resume_rules_and_oom(street: Path, tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "r"
    train(_cfg(street, epochs=1), run)
    with pytest.raises(TrainError, match="--resume"):
        train(_cfg(street, epochs=1), run)
    with pytest.raises(TrainConfigError, match="cannot change lr"):
        resume_config(run, {"lr": 0.5})
    assert resume_config(run, {"epochs": 5}).epochs == 5
    before = (run / "last.pt").read_bytes()

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(_Trainer, "_step", oom)
    with pytest.raises(TrainError, match="--batch-size 2") as err:
        train(resume_config(run, {"epochs": 2}), run, resume=True)
    assert "last.pt is intact" in str(err.value)
    assert (run / "last.pt").read_bytes() == before


def test_cli_reports_errors_as_json(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "one_place"
    write_street(folder, np.zeros(6))  # all at one spot: no negative anywhere
    with pytest.raises(TrainError, match="no training query"):
        _run_cli(
            [
                "train",
                "--data",
                str(folder),
                "--split-fractions",
                "1,0,0",
                "--out",
                str(tmp_path / "run"),
                "--epochs",
                "1",
                "--json-progress",
                *TINY,
            ]
        )
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["event"] == "error" and "no training query" in last["message"]


def _tiny_dbstruct(tmp_path: Path, queries_are_db_files: bool = False) -> DataSpec:
    """30 street photos 4 m apart: every third is a query (2 m off), the rest the database."""
    positions = np.arange(30) * 4.0
    paths = write_street(
        tmp_path / "root" / "images" / "000", positions, period_m=60, unique=0.25, gps_csv=False
    )
    names = np.array([f"000/{p.name}" for p in paths], dtype=object)
    utm = np.stack([585000 + positions, np.full(30, 4477000.0)])
    # Queries that are database files have a positive identical to themselves: always easy.
    db = np.ones(30, bool) if queries_are_db_files else np.arange(30) % 3 != 0
    struct = {
        "whichSet": "train",
        "dbImageFns": names[db],
        "utmDb": utm[:, db],
        "qImageFns": names[::3],
        "utmQ": utm[:, ::3] + 2.0,
        "numImages": int(db.sum()),
        "numQueries": 10,
        "posDistThr": 25.0,
        "posDistSqThr": 625.0,
        "nonTrivPosDistSqThr": 100.0,
    }
    scipy.io.savemat(tmp_path / "tiny_train.mat", {"dbStruct": struct})
    return DataSpec(dbstruct=str(tmp_path / "tiny_train.mat"), image_root=str(tmp_path / "root"))


def test_train_from_a_dbstruct(tmp_path: Path) -> None:
    # 20 database images: too few for 64-D whitening, which is then skipped and said so.
    cfg = _cfg(tmp_path, epochs=1, split=None, whitening_dim=64, data=_tiny_dbstruct(tmp_path))
    events: list[dict] = []
    res = train(cfg, tmp_path / "run", progress=events.append)
    start = next(e for e in events if e["event"] == "start")
    assert start["train"]["queries"] == 10 and start["val"] is None
    assert res.best_epoch is None and res.model_path.is_file()
    epoch = next(e for e in events if e["event"] == "epoch")
    assert epoch["tuples"] > 0 and epoch["all_easy"] is False
    skipped = next(e for e in events if e["event"] == "whitening_skipped")
    assert skipped["dim"] == 64 and skipped["images"] == 20 and "more than 64" in skipped["message"]
    assert not any(e["event"] == "whitening" for e in events)
    final = load_checkpoint(res.model_path)
    assert final.whiten is None and final.meta["training"]["whitening"]["dim"] is None


def test_nothing_to_learn_is_said_after_the_first_mining_pass(tmp_path: Path) -> None:
    # Every query is a database file: its own photo is its positive, every negative is farther.
    data = _tiny_dbstruct(tmp_path, queries_are_db_files=True)
    events: list[dict] = []
    run = tmp_path / "run"
    with pytest.raises(TrainError, match="nothing to learn: the model already tells every place"):
        train(_cfg(tmp_path, epochs=2, split=None, data=data), run, progress=events.append)
    kinds = [e["event"] for e in events]
    # Said as soon as the first epoch's mining is done: no epoch ends, no step, no model.
    assert kinds[-1] == "nothing_to_learn" and not {"epoch", "step", "done"} & set(kinds)
    message = events[-1]["message"]
    assert "other times, seasons or light" in message
    assert not any(word in message for word in ("margin", "tuple", "/train"))
    assert not (run / "model.pt").exists()  # nothing for "Use this model"
    assert not (run / "init.pt").exists() and not (run / "last.pt").exists()  # nor for Resume


def test_data_that_cannot_train_is_refused_before_the_model(tmp_path: Path) -> None:
    folder = tmp_path / "far_apart"
    write_street(folder, np.arange(8) * 30.0)  # no photo has another within 10 m
    events: list[dict] = []
    cfg = _cfg(folder, split=SplitConfig(fractions=(1.0, 0.0, 0.0)))
    with pytest.raises(TrainError, match="no training query") as err:
        train(cfg, tmp_path / "run", progress=events.append)
    message = str(err.value)
    assert "none of its 8 queries has another photo within 10 m" in message
    assert "0 of 8 places have two or more photos" in message and "\n" not in message
    assert events == [] and not (tmp_path / "run" / "init.pt").exists()  # refused before k-means


def test_configs_nest_their_groups_and_old_flat_runs_still_load() -> None:
    cfg = TrainConfig(data=DataSpec(data="x"), image_size=96, cache_batch_size=3, margin=0.2)
    assert cfg.extract.image_size == 96 and cfg.extract.batch_size == 3
    assert cfg.mining.margin == 0.2 and not cfg.extract_config().channels_last
    assert TrainConfig().extract.image_size == ExtractConfig().image_size  # nested, not copied
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    flat = {  # a run saved before the options were grouped
        "data": {"data": "x"},
        "val": {},
        "split": {"fractions": [0.6, 0.4, 0.0]},
        "epochs": 3,
        "image_size": 96,
        "cache_batch_size": 3,
        "num_workers": 0,
        "device": "cpu",
        "neg_samples": 40,
        "neg_cache": 10,
        "neg_per_tuple": 4,
        "cache_refresh_queries": 1000,
        "loss": "unsquared",
        "margin": None,
        "init": {"num_images": 12},
    }
    old = TrainConfig.from_dict(flat)
    assert old.extract.device == "cpu" and old.mining.neg_per_tuple == 4 and old.epochs == 3
    assert old.mining.effective_margin == pytest.approx(math.sqrt(0.1))
    with pytest.raises(TrainConfigError, match="unknown training options"):
        TrainConfig.from_dict({**flat, "nonsense": 1})


DDP_SCRIPT = """
import argparse, sys
from netvlad_gui.cli.training import add_train_commands
ap = argparse.ArgumentParser()
add_train_commands(ap.add_subparsers(dest="command", required=True))
args = ap.parse_args(sys.argv[1:])
sys.exit(args.func(args))
"""


def test_ddp_two_cpu_processes_match_one(street: Path, tmp_path: Path) -> None:
    script = tmp_path / "netvlad_train.py"
    script.write_text(DDP_SCRIPT)
    argv = [
        "train",
        "--data",
        str(street),
        "--out",
        str(tmp_path / "ddp"),
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--batch-size",
        "2",
        "--split-fractions",
        "0.6,0.4,0",
        *TINY,
    ]
    # The repo first; what else is on the path stays (scripts/test-as-avx2.sh's CPU flags).
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(script),
            *argv,
        ],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = load_checkpoint(tmp_path / "ddp" / "last.pt")
    _, state = read_train_state(tmp_path / "ddp")
    assert state["world_size"] == 2 and (tmp_path / "ddp" / "model.pt").is_file()
    # One process with the same global batch (2 ranks x 2 tuples) takes the same steps.
    torch.set_num_threads(1)
    try:
        train(_cfg(street, epochs=1, batch_size=4, device="cpu"), tmp_path / "single")
    finally:
        torch.set_num_threads(max(1, os.cpu_count() or 1))
    single = load_checkpoint(tmp_path / "single" / "last.pt").state_dict()
    moved = 0
    init = load_checkpoint(tmp_path / "single" / "init.pt").state_dict()
    for k, v in ddp.state_dict().items():
        torch.testing.assert_close(v, single[k], atol=2e-5, rtol=1e-4)
        moved += int(not torch.equal(v, init[k]))
    assert moved >= 3  # conv5 and NetVLAD did train


def _rss_mb() -> float:
    """This process's resident size now (Linux), or skip: ru_maxrss only knows the peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    pytest.skip("no /proc/self/status: the resident size now is not readable here")


def _rss_per_epoch(street: Path, run_dir: Path) -> dict[int, float]:
    rss: dict[int, float] = {}

    def progress(ev: dict) -> None:
        if ev["event"] == "epoch":
            rss[ev["epoch"]] = _rss_mb()

    cfg = _cfg(street, epochs=3, image_size=192, cache_refresh_queries=8, whitening_dim=None)
    train(cfg, run_dir, progress=progress)
    return rss


def test_memory_does_not_grow_from_epoch_to_epoch(
    street: Path, tmp_path: Path, monkeypatch
) -> None:
    import netvlad_gui.core.training.train as train_mod

    flat = _rss_per_epoch(street, tmp_path / "flat")
    # The same run with a deliberate leak of 16 MB per step: the measurement must see it.
    kept: list[torch.Tensor] = []
    real_step = train_mod.take_step

    def leaky(*args, **kwargs):
        kept.append(torch.ones(4 * 1024 * 1024))  # 16 MB that no one frees
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_mod, "take_step", leaky)
    leaking = _rss_per_epoch(street, tmp_path / "leak")
    steps_per_epoch = len(kept) / 3
    assert steps_per_epoch >= 3  # the leak adds >= 48 MB per epoch
    assert leaking[3] - leaking[2] > 0.75 * 16 * steps_per_epoch, leaking
    assert flat[3] - flat[2] < 24, flat  # no per-epoch growth, a little noise allowed


def test_lund_library_has_nothing_to_learn_and_says_so_before_any_epoch(
    shared_dir: Path, tmp_path: Path
) -> None:
    """Issue 23: the 19-photo lund library failed after every epoch with jargon; now the first
    pass over its photos says, in plain words, that there is nothing to learn."""
    from _lund import TEST_IMAGE_SIZE

    library = shared_dir / "data" / "lund_street" / "references"
    cfg = TrainConfig(data=DataSpec(data=str(library)), image_size=TEST_IMAGE_SIZE, epochs=5)
    events: list[dict] = []
    with pytest.raises(TrainError, match="^nothing to learn: the model already tells"):
        train(cfg, tmp_path / "run", progress=events.append)
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "nothing_to_learn" and not {"step", "epoch", "val"} & set(kinds)
    assert kinds.count("start") == 1 and "references/train" not in events[-1]["message"]
    assert not any((tmp_path / "run").glob("*.pt"))  # nothing to resume or to use


def test_a_step_in_two_passes_gives_the_one_pass_gradient(tmp_path: Path) -> None:
    """Memory holds a chunk's activations, not the step's; the gradient stays the same."""
    from types import SimpleNamespace

    from netvlad_gui.core.trainconfig import MiningConfig
    from netvlad_gui.core.training.frozen import (
        FrozenStore,
        GroupsForward,
        Prefix,
        Tail,
        frozen_split,
    )
    from netvlad_gui.core.training.mining import TrainTuple
    from netvlad_gui.core.training.steps import StepInputs, take_step
    from netvlad_gui.core.training.trainenv import DistInfo

    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone="alexnet", num_clusters=4), "none")
    params = set_trainable(model, "last_block")
    model.eval()
    split = frozen_split(model)
    store = FrozenStore(tmp_path / "store.f16")
    with torch.inference_mode():
        feats = Prefix(model, split)(torch.rand(7, 3, 96, 128)).numpy()
    for i, f in enumerate(feats):
        store._put((f"/p/{i}.jpg", 0), f)
    keys = [(f"/p/{i}.jpg", 0) for i in range(7)]
    tuples = [TrainTuple(0, 1, np.array([2, 3, 4])), TrainTuple(5, 6, np.array([2, 4]))]

    class Recorder:
        def __init__(self) -> None:
            self.grads: list[torch.Tensor] = []

        def step(self) -> None:
            self.grads = [p.grad.clone() for p in params]

        def zero_grad(self, set_to_none: bool = True) -> None:
            for p in params:
                p.grad = None

    def gradients(chunk: int) -> tuple[list[torch.Tensor], float]:
        run = SimpleNamespace(scaler=None, optimizer=Recorder(), stale=False)
        inputs = StepInputs(tuples, keys, keys, store)
        cfg = MiningConfig(margin=2.0)  # every pair violates: a gradient everywhere
        total, viol, n = take_step(
            GroupsForward(Tail(model, split)),
            inputs,
            run,
            cfg,
            DistInfo(),
            torch.device("cpu"),
            tuple(feats.shape[1:]),
            chunk,
        )
        assert viol == 5 and n == 2 and run.stale
        return run.optimizer.grads, total

    one, loss_one = gradients(0)
    two, loss_two = gradients(2)
    assert loss_two == pytest.approx(loss_one, rel=1e-6)
    for a, b in zip(one, two, strict=True):
        torch.testing.assert_close(b, a, atol=1e-6, rtol=1e-4)
    assert any(float(g.abs().sum()) > 0 for g in one)
    store.close()
