"""HC-MGAN: nets for every supported input shape, noise and tree arithmetic, a smoke tree on digits
(mass invariants, clustering of new data, checkpoint round trip), resume after an interrupted split,
and a run through train.py."""

import json
from functools import partial

import pytest
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from genclust.data.datamodule import ClusteringDataModule
from genclust.errors import ConfigError
from genclust.methods.hc_mgan import HCMGAN, games
from genclust.methods.hc_mgan.clock import TreeClock
from genclust.methods.hc_mgan.games import RawSplitGame, RefinementGame, d_loss, instance_noise
from genclust.methods.hc_mgan.tree import Tree
from genclust.nets import hc_mgan as nets
from genclust.nets.blocks import count_parameters
from genclust.nets.hc_mgan import Critic, SplitMember
from genclust.readouts import TreeCutReadout
from genclust.train import run
from tests.helpers import compose_cfg, options, run_cli

TINY_NETS = {"generator": partial(nets.generator, g_channels=8, mlp_hidden=16),
             "critic": partial(nets.critic, d_channels=[4, 8, 8], mlp_hidden=16)}
OPTIM = {player: partial(torch.optim.Adam, lr=lr, betas=(0.5, 0.999))
         for player, lr in (("discriminator", 1e-4), ("classifier", 2e-5), ("generator", 2e-4))}
TINY = dict(z_dim=8, batch_size=32, gen_batch_size=16)
DIGITS = dict(name="digits", n_clusters=10, img_shape=[1, 8, 8], fit_on=["train"],
              evaluate_on={"train": ["train"], "test": ["test"]},
              source={"_target_": "genclust.data.sources.digits", "train_fraction": 0.8, "seed": 0})


def make(k=3, img_shape=(1, 8, 8), raw=None, ref=None, **kw):
    torch.manual_seed(0)
    hp = {**TINY, "raw_split": {"epochs": 1, **(raw or {})}, "refinement": {"epochs": 1, "count": 1, **(ref or {})}, **kw}
    return HCMGAN(k, list(img_shape), nets=TINY_NETS, optim=OPTIM, **hp)


def digits_dm(model):
    dm = ClusteringDataModule(DIGITS, batch_size=model.batch_size, pixel_range=model.pixel_range)
    dm.setup("fit")
    return dm


def trainer_factory(root, batches=2, calls=None, callbacks=(), max_epochs=1):
    """train.py's make_trainer: a quick trainer (limit_train_batches) whose max_epochs caps every stage."""
    def make_trainer(**overrides):
        if calls is not None:
            calls.append(overrides.get("max_epochs"))
        kwargs = dict(accelerator="cpu", max_epochs=max_epochs, limit_train_batches=batches, logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      default_root_dir=str(root), callbacks=list(callbacks))
        return pl.Trainer(**{**kwargs, **overrides})
    return make_trainer


# ----------------------------------------------------------------------------------------- configs
def test_method_defaults_are_the_papers():
    m = instantiate(compose_cfg(["method=hc_mgan", "dataset=mnist_test"]).method, _convert_="all")
    gs = m.game_settings
    assert (m.batch_size, gs.gen_batch_size, gs.z_dim, gs.z_prior) == (100, 100, 100, "uniform01")  # Tables 2-3
    opt = {p: m.optim_factories[p] for p in ("generator", "discriminator", "classifier")}
    assert all(f.func is torch.optim.Adam and list(f.keywords["betas"]) == [0.5, 0.999] for f in opt.values())
    assert [opt[p].keywords["lr"] for p in ("generator", "discriminator", "classifier")] == [2e-4, 1e-4, 2e-5]
    assert gs.lambda_cls == 1.0 and (m.raw.epochs, m.ref.epochs, m.noise.start, m.ref.count) == (120, 120, 1.0, 6)
    assert m.net_factories["generator"].keywords["g_channels"] == 128
    assert list(m.net_factories["critic"].keywords["d_channels"]) == [128, 256, 512] and m.ref.gens_per_group == 1
    assert m.pixel_range == "tanh" and not m.raw.lambda_squared and m.ref.cls_reduction == "sum"
    # the code's variants are options, the defaults keep the current behaviour
    assert (gs.d_fake_weighting, gs.fake_draw) == ("per_batch", "once")


@pytest.mark.parametrize("experiment", [e for e in options("experiment") if e.startswith("hc_mgan_")])
def test_experiments_compose(experiment):
    cfg = compose_cfg([f"experiment={experiment}"])
    m = instantiate(cfg.method, _convert_="all")
    assert isinstance(m, HCMGAN) and m.n_clusters == cfg.dataset.n_clusters == 10
    assert cfg.callbacks.evaluator.every_n_epochs == 0  # a growing tree is scored per K at the end
    if experiment in ("hc_mgan_mnist", "hc_mgan_fmnist"):  # paper settings (Table 3)
        fm = experiment == "hc_mgan_fmnist"
        assert (m.ref.count, m.noise.start) == ((8, 1.5) if fm else (6, 1.0))
        assert m.raw.epochs == m.ref.epochs == 120
    if experiment.endswith("_cpu"):  # CPU budget: the cpu_budget trainer with a time cap
        assert cfg.trainer.max_time and cfg.trainer.precision == "bf16-mixed"


# -------------------------------------------------------------------------------------------- nets
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 16, 16), (1, 28, 28), (3, 32, 32), (2,)])
def test_net_shapes_every_input_size(shape):
    x = nets.generator(8, shape, "tanh", g_channels=8, mlp_hidden=16)(torch.rand(5, 8))
    assert tuple(x.shape) == (5, *shape)
    if len(shape) == 3:
        assert x.min() >= -1 and x.max() <= 1  # tanh
    critic = nets.critic(shape, [4, 8, 8], 16)
    assert critic.d_head(critic.trunk(x)).shape == (5, 1) and critic.c_head(critic.trunk(x)).shape == (5, 2)
    assert SplitMember(shape, [4, 8, 8], 16)(x).shape == (5, 2)
    assert nets.from_arch(critic.member_arch)(x).shape == (5, 2)


def test_generator_output_follows_the_pixel_range():
    g = nets.generator(8, (1, 8, 8), "unit", g_channels=8)
    assert isinstance(g[-1], torch.nn.Sigmoid) and isinstance(nets.generator(8, (1, 8, 8), "tanh")[-1], torch.nn.Tanh)
    x = g(torch.randn(64, 8) * 10)
    assert x.min() >= 0 and x.max() <= 1
    m = make(pixel_range="unit")
    assert isinstance(m.make_generator()[-1], torch.nn.Sigmoid)
    with pytest.raises(ConfigError, match="pixel_range"):
        nets.generator(8, (1, 8, 8), "bytes")


def test_paper_architecture_28x28():
    g = nets.generator(100, (1, 28, 28), g_channels=128)
    # Table 2: FC 100 -> 7*7*128, deconv 128 -> 64 (4x4), deconv 64 -> 1 (4x4)
    assert count_parameters(g) == (100 * 6272 + 6272) + (128 * 64 * 16 + 64) + (64 * 16 + 1)
    critic = Critic((1, 28, 28), [128, 256, 512])
    # three conv 5x5 (128, 256, 512) + LayerNorm over (C,H,W) on 14x14, 7x7, 4x4 maps; heads on 512*4*4
    convs = (25 * 128 + 128) + (128 * 25 * 256 + 256) + (256 * 25 * 512 + 512)
    norms = 2 * (128 * 14 * 14 + 256 * 7 * 7 + 512 * 4 * 4)
    assert count_parameters(critic.trunk) == convs + norms
    assert critic.d_head.in_features == 8192


def test_rejects_bad_settings():
    with pytest.raises(ConfigError):
        make(img_shape=(1, 10, 10))
    with pytest.raises(ConfigError):
        make(z_prior="gaussian-ish")
    with pytest.raises(ConfigError):
        make(ref={"cls_reduction": "max"})
    with pytest.raises(ConfigError, match="unknown refinement keys"):
        make(ref={"n_refinements": 2})
    with pytest.raises(ConfigError, match="d_fake_weighting"):
        make(d_fake_weighting="eq3")
    with pytest.raises(ConfigError, match="fake_draw"):
        make(ref={"fake_draw": "twice"})


# ------------------------------------------------------------------------------ noise / arithmetic
def test_instance_noise_is_multiplicative():
    x = torch.tensor([[-1.0, 0.0, 0.5]]).repeat(4000, 1)
    y = instance_noise(x, 1.5)
    assert torch.equal(y[:, 1], x[:, 1])  # mid-grey (0) gets no noise
    assert abs(float((y[:, 0] - x[:, 0]).std()) - 1.5) < 0.1 and abs(float((y[:, 2] - x[:, 2]).std()) - 0.75) < 0.06
    assert torch.equal(instance_noise(x, 0.0), x)


def test_additive_instance_noise_is_the_same_everywhere():
    x = torch.tensor([[-1.0, 0.0, 0.5]]).repeat(4000, 1)
    noise = instance_noise(x, 1.5, "additive") - x
    assert all(abs(float(noise[:, j].std()) - 1.5) < 0.1 for j in range(3))
    assert torch.equal(instance_noise(x, 0.0, "additive"), x)
    assert make(noise={"kind": "additive"}).game_settings.noise_kind == "additive"
    with pytest.raises(ConfigError, match="noise.kind"):
        make(noise={"kind": "salt"})


def test_noise_schedule_reaches_zero_in_the_last_epoch():
    m = make(noise={"start": 1.5})

    class FakeTrainer:
        max_epochs = 4
        current_epoch = 0

    m._trainer = FakeTrainer()  # noqa: SLF001
    scales = []
    for e in range(4):
        FakeTrainer.current_epoch = e
        scales.append(m.noise_scale())
    m._trainer = None
    assert scales == pytest.approx([1.125, 0.75, 0.375, 0.0])  # s0 (1 - e/E), e = 1..E


def test_leaf_probs_are_products_along_paths():
    tree = Tree()
    member = partial(SplitMember, (1, 8, 8), [4, 8, 8], 16)
    tree.init_root(4)
    s0 = tree.memberships[0]
    p = torch.tensor([0.2, 0.5, 0.1, 0.0], dtype=torch.float64)
    tree.commit_split(0, p * s0, s0 - p * s0, [member()], [], [], {})
    assert tree.next_node() == 2  # node 2 carries 3.2 of the 4 examples' mass
    q = torch.tensor([0.5, 0.1, 0.0, 0.3], dtype=torch.float64)
    s2 = tree.memberships[2]
    tree.commit_split(2, q * s2, s2 - q * s2, [member()], [], [], {})
    assert tree.leaves() == [1, 3, 4] and tree.leaves(1) == [1, 2]
    probs = tree.leaf_probs_from_split_probs(torch.stack([p, q], 1), 2)
    expect = torch.stack([p, (1 - p) * q, (1 - p) * (1 - q)], 1)
    assert torch.allclose(probs, expect) and torch.allclose(tree.leaf_memberships(), expect)
    with pytest.raises(RuntimeError):  # mass must be conserved
        tree.commit_split(1, s0, s0, [member()], [], [], {})


class Recorder:
    """Stands in for the LightningModule: records which parameters each player's loss reaches."""

    def __init__(self, game, method):
        self.game = game
        self.opts = {name: method.make_optimizer(player, params) for name, player, params in game.players()}
        self.reached = {}

    def update(self, name, loss):
        names, params = zip(*[(n, p) for n, p in self.game.named_parameters()])
        grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
        self.reached[name] = {n for n, g in zip(names, grads) if g is not None and bool(g.abs().sum() > 0)}
        own = {id(p) for group in self.opts[name].param_groups for p in group["params"]}
        for p, g in zip(params, grads):
            p.grad = g if id(p) in own else None
        self.opts[name].step()
        self.game.zero_grad(set_to_none=True)

    def log_epoch_mean(self, logs):
        pass


def test_per_batch_losses_are_logged_as_epoch_means_at_the_epoch_end(monkeypatch):
    m = make()
    logged = []
    monkeypatch.setattr(m, "log_dict", lambda logs, **kw: logged.append(({k: float(v) for k, v in logs.items()}, kw)))
    first = torch.tensor(1.0)
    m.log_epoch_mean({"train/a": first, "train/b": 2.0})
    m.log_epoch_mean({"train/a": torch.tensor(3.0), "train/b": 5.0})
    assert logged == [] and float(first) == 1.0  # nothing reaches Lightning per batch; the inputs stay as they were
    m._log_epoch_means()
    assert logged == [({"train/a": 2.0, "train/b": 3.5}, {"on_step": False, "on_epoch": True})]
    m._log_epoch_means()  # the sums restart with the next epoch
    assert len(logged) == 1


def test_raw_split_players_and_gradients():
    m = make()
    game = m.new_game("raw")
    rec = Recorder(game, m)
    game.training_step(rec, torch.rand(32, 1, 8, 8) * 2 - 1, noise=0.5)
    assert rec.opts.keys() == {"discriminator", "classifier", "generator"}
    # D's loss trains the shared trunk and D's head; C's loss reaches only C's linear head (Table 2
    # supplementary: only D's gradients update the shared convolutions).
    assert any(n.startswith("critic.trunk.") for n in rec.reached["discriminator"])
    assert not any(n.startswith("generators.") for n in rec.reached["discriminator"])
    assert rec.reached["classifier"] == {"critic.c_head.weight", "critic.c_head.bias"}
    g_reached = rec.reached["generator"]
    assert any(n.startswith("generators.0.") for n in g_reached) and any(n.startswith("generators.1.") for n in g_reached)
    assert not any(n.startswith("critic.trunk.") for n in g_reached)  # no weight-gradient work in the trunk


def test_refinement_players_and_cross_terms():
    m = make(ref={"gens_per_group": 2})
    game = m.new_game("refine")
    rec = Recorder(game, m)
    real = torch.rand(32, 1, 8, 8) * 2 - 1
    game.training_step(rec, real, real.flip(0), noise=0.0)
    assert list(rec.opts) == [f"{p}_{g}" for g in "lm" for p in ("discriminator", "classifier", "generator")]
    assert len(game.group_l.generators) == 2  # the code's variant
    for own, ext in (("l", "m"), ("m", "l")):
        assert rec.reached[f"classifier_{own}"] == {f"group_{own}.critic.c_head.weight", f"group_{own}.critic.c_head.bias"}
        g_reached = rec.reached[f"generator_{own}"]
        assert any(n.startswith(f"group_{own}.generators.") for n in g_reached)
        assert not any(n.startswith(f"group_{ext}.generators.") for n in g_reached)
        # Eq. 6: G_own is also scored by the other group's classifier
        assert f"group_{ext}.critic.c_head.weight" in g_reached


def test_warm_start_continues_the_previous_stage():
    m = make(ref={"gens_per_group": 2, "warm_start": "refine"})
    raw = RawSplitGame(m.make_generator, m.make_critic, m.game_settings)
    ref = RefinementGame(m.make_generator, m.make_critic, m.game_settings)
    ref.warm_start("raw", raw.state_dict())
    z, x = torch.rand(3, 8), torch.rand(3, 1, 8, 8)
    assert torch.equal(ref.group_l.generators[1](z), raw.generators[0](z))  # G_alpha -> group l
    assert torch.equal(ref.group_m.generators[0](z), raw.generators[1](z))  # G_beta -> group m
    for group in (ref.group_l, ref.group_m):
        assert torch.equal(group.critic.c_head(group.critic.trunk(x)), raw.critic.c_head(raw.critic.trunk(x)))
    nxt = m.new_game("refine")
    nxt.warm_start("refine", ref.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(nxt.state_dict().values(), ref.state_dict().values()))


def test_d_fake_weighting_eq2_weights_each_generator():
    critic = Critic((1, 8, 8), [4, 8, 8], 16)
    real, fake = torch.rand(6, 1, 8, 8), torch.rand(8, 1, 8, 8)
    logits = critic.d_head(critic.trunk(torch.cat([real, fake])))
    bce = games.bce(logits[:6], 1.0), games.bce(logits[6:], 0.0)
    assert torch.allclose(d_loss(critic, real, fake, 2, "per_batch"), bce[0] + bce[1])  # the code: 1:1
    assert torch.allclose(d_loss(critic, real, fake, 2, "eq2"), bce[0] + 2 * bce[1])  # Eq. 2: 1 real : 2 fake terms


@pytest.mark.parametrize(("draw", "n_z"), [("once", 1), ("per_group", 2)])
def test_refinement_fake_draws(draw, n_z, monkeypatch):
    m = make(ref={"fake_draw": draw})
    game = m.new_game("refine")
    drawn = []
    sample_z = games.sample_z
    monkeypatch.setattr(games, "sample_z", lambda *a: drawn.append(1) or sample_z(*a))
    real = torch.rand(32, 1, 8, 8) * 2 - 1
    game.training_step(Recorder(game, m), real, real.flip(0), noise=0.0)
    assert len(drawn) == n_z  # Alg. 3 line 3 draws x_hat once; the code redraws before group m


# ------------------------------------------------------------------------------------- smoke tree
class StageWeights(pl.Callback):
    """Records, per stage fit, the mass of the sampling weights and the batches of the weighted epoch."""

    def __init__(self):
        self.seen = []

    def on_train_start(self, trainer, pl_module):
        w = pl_module.sampling_weights()
        self.seen.append((round(float(w.sum()), 6), trainer.datamodule.batches_per_epoch(), trainer.max_epochs))


@pytest.fixture(scope="module")
def grown(tmp_path_factory):
    root = tmp_path_factory.mktemp("hc_tree")
    m = make(k=3, ref={"count": 2}, raw={"epochs": 2})
    dm = digits_dm(m)
    calls, weights = [], StageWeights()
    m.fit_method(trainer_factory(root, calls=calls, callbacks=[weights]), dm)
    return m, dm, root, calls, weights


def test_tree_grows_to_k_leaves_and_conserves_mass(grown):
    m, dm, root, calls, weights = grown
    tree = m.tree
    # a probe trainer, then one per stage (raw + 2 refinements per split), each capped at the quick trainer's 1 epoch
    assert calls == [None] + [1] * (2 * 3)
    # the stage's weights reach the sampler through sampling_weights(): P_{s_k}, and s_k / 2 in refinements
    n = len(dm.fit_set)
    assert [w for w, _, _ in weights.seen[:3]] == [n, n / 2, n / 2]
    assert weights.seen[0][1] == n // m.batch_size and weights.seen[1][1] == n // (2 * m.batch_size)
    assert m.sampling_weights() is None and dm.current_weights() is None  # none outside a stage
    assert tree.splits[1]["node"] == max((1, 2), key=lambda k: tree.nodes[k]["mass"])  # heaviest leaf next
    for s in tree.splits:
        parent = tree.memberships[s["node"]]
        first, second = (tree.memberships[c] for c in s["children"])
        assert (first >= 0).all() and (second >= 0).all()
        assert torch.allclose(first + second, parent, atol=1e-12, rtol=0)
    assert torch.allclose(tree.leaf_memberships().sum(1), torch.ones(tree.n_fit, dtype=torch.float64), atol=1e-12)
    assert (root / "tree" / "tree.pt").is_file() and not (root / "tree" / "in_progress.pt").exists()
    assert json.loads((root / "tree" / "nodes.json").read_text())["n_leaves"] == 3


def test_clusters_new_data_and_reproduces_memberships(grown):
    m, dm, *_ = grown
    test = dm.eval_sets["test"].x
    probs = m.assign_in_batches(test)[0]
    assert probs.shape == (len(test), 3) and torch.allclose(probs.sum(1), torch.ones(len(test)), atol=1e-5)
    m.fit_readouts(dm.fit_set.x)  # one tree-cut read-out per K the tree passed through
    assert sorted(m.readouts) == ["k1", "k2", "k3"] and all(isinstance(r, TreeCutReadout) for r in m.readouts.values())
    assert [m.readouts[f"k{k}"].cut_k for k in (1, 2, 3)] == [1, 2, 3]
    pred = m.predict_in_batches(test)
    for k in (1, 2, 3):
        pk = pred[f"k{k}/probs"]
        assert pk.shape == (len(test), k) and torch.allclose(pk.sum(1), torch.ones(len(test)), atol=1e-5)
        assert torch.equal(pred[f"k{k}/labels"], pk.argmax(1))
    assert torch.allclose(pred["k3/probs"], probs, atol=1e-6)
    split_probs = m.embed(test, "split_probs")
    assert torch.allclose(m.tree.leaf_probs_from_split_probs(split_probs, 1).float(), pred["k2/probs"])
    # on the fit set the path products are the membership vectors
    fit_probs = m.predict_in_batches(dm.fit_set.x)["k3/probs"].double()
    assert torch.allclose(fit_probs, m.tree.leaf_memberships(), atol=1e-5)
    imgs = m.sample(6, cluster=2)
    assert imgs.shape == (6, 1, 8, 8) and imgs.abs().max() <= 1
    assert m.sample(4).shape == (4, 1, 8, 8)


def test_checkpoint_clusters_new_data(grown, tmp_path):
    m, dm, *_ = grown
    m.fit_readouts(dm.fit_set.x)
    path = tmp_path / "m.pt"
    torch.save({"state_dict": m.state_dict()}, path)
    fresh = make(k=3, ref={"count": 2}, raw={"epochs": 2})
    # strict; the tree rebuilds its nets and the tree-cut read-outs are recreated from their keys
    fresh.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
    assert sorted(fresh.readouts) == ["k1", "k2", "k3"]
    test = dm.eval_sets["test"].x
    got, want = fresh.predict_in_batches(test), m.predict_in_batches(test)
    assert got.keys() == want.keys() and all(torch.allclose(got[k].float(), want[k].float(), atol=1e-6) for k in got)
    assert fresh.describe()["hc_mgan"]["n_splits"] == 2


def test_figures(grown, tmp_path):
    m, *_ = grown
    paths = m.save_figures(tmp_path)
    assert {p.name for p in paths} == {"hc_mgan_tree.png", "hc_mgan_tree_generated.png", "hc_mgan_class_mass.json"}
    masses = json.loads((tmp_path / "hc_mgan_class_mass.json").read_text())
    assert sum(masses["nodes"]["0"]) == pytest.approx(m.tree.n_fit) and len(masses["splits"]) == 2


def test_single_cluster_is_the_root():
    m = make(k=1)
    dm = digits_dm(m)
    calls = []
    m.fit_method(trainer_factory("unused-root", calls=calls), dm)
    assert m.tree.n_leaves == 1 and calls == [None]  # the probe trainer only (returned), no fit
    assert torch.equal(m.cluster_probs(dm.fit_set.x[:5]), torch.ones(5, 1)) and m.sample(3) is None


# ----------------------------------------------------------------------------------------- resume
class Interrupt(Exception):
    pass


class StopAtFit(pl.Callback):
    """Raise when the n-th stage fit starts (a killed run)."""

    def __init__(self, n):
        self.n, self.seen = n, 0

    def on_train_start(self, trainer, pl_module):
        self.seen += 1
        if self.seen == self.n:
            raise Interrupt


def test_resume_after_an_interrupted_split(tmp_path):
    m = make(k=3, ref={"count": 2, "warm_start": "refine"})
    dm = digits_dm(m)
    # fits: split 1 = 1..3, split 2 = raw (4), refinement 1 (5), refinement 2 (6): killed at 6
    with pytest.raises(Interrupt):
        m.fit_method(trainer_factory(tmp_path, callbacks=[StopAtFit(6)]), dm)
    assert (tmp_path / "tree" / "in_progress.pt").is_file()
    saved = torch.load(tmp_path / "tree" / "tree.pt", weights_only=True)["tree"]
    assert len(saved["_extra_state"]["splits"]) == 1
    first_split = saved["_extra_state"]["memberships"]

    again = make(k=3, ref={"count": 2, "warm_start": "refine"})  # refinement 2 starts from the saved refinement 1
    calls = []
    again.fit_method(trainer_factory(tmp_path, calls=calls), digits_dm(again))
    assert again.tree.n_splits == 2 and calls == [None, 1]  # the probe, then only refinement 2 of split 2
    assert again.tree.splits[1]["refinements"] == 2 and len(again.tree.splits[1]["seconds"]) == 3
    assert torch.equal(again.tree.memberships[1], first_split[1])  # split 1 was not redone
    assert not (tmp_path / "tree" / "in_progress.pt").exists()


# -------------------------------------------------------------------------------------- train.py
def test_train_py_smoke_on_digits(tmp_path):
    cfg = compose_cfg(["method=hc_mgan", "dataset=digits", "trainer=smoke", "logger=none",
                       "method.n_clusters=3", "method.refinement.count=1", "method.raw_split.epochs=2",
                       "method.refinement.epochs=2"], output_dir=tmp_path)
    result = run(cfg)
    assert [row["k"] for row in result["per_k"]] == [1, 2, 3]
    assert result["method_info"]["hc_mgan"]["n_splits"] == 2
    assert (tmp_path / "tree" / "tree.pt").is_file() and (tmp_path / "figures" / "hc_mgan_tree.png").is_file()
    assert (tmp_path / "model.pt").is_file()
    # scripts/tree_report.py reads the (possibly still growing) tree of a run folder
    (tmp_path / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, tmp_path / ".hydra" / "config.yaml")
    proc = run_cli([str(tmp_path)], script="scripts/tree_report.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert [s["split"] for s in report["splits"]] == [1, 2] and [r["k"] for r in report["per_k"]] == [1, 2, 3]
    assert report["per_k"][-1]["test/acc"] == pytest.approx(result["per_k"][-1]["test/acc"], abs=1e-4)
    # scripts/tree_cut.py keeps the first split; a run in the cut folder regrows split 2 alone
    cut = tmp_path / "cut"
    proc = run_cli([str(tmp_path), "1", str(cut)], script="scripts/tree_cut.py")
    assert proc.returncode == 0, proc.stderr[-2000:]
    kept = torch.load(cut / "tree" / "tree.pt", weights_only=True)["tree"]["_extra_state"]
    assert len(kept["splits"]) == 1 and [n["id"] for n in kept["nodes"]] == [0, 1, 2]
    assert run_cli([str(tmp_path), "5", str(tmp_path / "cut5")], script="scripts/tree_cut.py").returncode == 2
    with open_dict(cfg):
        cfg.paths.output_dir = str(cut)
    regrown = run(cfg)
    assert regrown["method_info"]["hc_mgan"]["n_splits"] == 2
    full = torch.load(tmp_path / "tree" / "tree.pt", weights_only=True)["tree"]["_extra_state"]
    again = torch.load(cut / "tree" / "tree.pt", weights_only=True)["tree"]["_extra_state"]
    assert torch.equal(again["memberships"][:3], full["memberships"][:3])  # split 1 kept as it was


# ------------------------------------------------------------------------------ collapse restarts
class CountEpochs(pl.Callback):
    def __init__(self):
        self.epochs_per_fit = []

    def on_train_start(self, trainer, pl_module):
        self.epochs_per_fit.append(0)

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs_per_fit[-1] += 1


def test_collapse_restarts_and_the_last_attempt_runs_its_whole_schedule(tmp_path):
    # every check "sees" a collapse: attempts 1..2 stop at the first check, the kept last one trains on
    m = make(k=2, ref={"count": 0}, raw={"epochs": 3},
             collapse={"check_from": 1, "check_every": 1, "threshold": 1e9, "max_attempts": 3})
    counter = CountEpochs()
    m.fit_method(trainer_factory(tmp_path, callbacks=[counter], max_epochs=3), digits_dm(m))
    assert counter.epochs_per_fit == [1, 1, 3]
    assert m.tree.splits[0]["attempts"] == [3]


def test_a_massless_child_skips_the_refinements(tmp_path, monkeypatch):
    m = make(k=2, ref={"count": 2})
    monkeypatch.setattr(HCMGAN, "_first_child_prob", lambda self, members, device: torch.ones(len(self._fit_x),
                                                                                             dtype=torch.float64))
    calls = []
    with pytest.warns(UserWarning, match="skipping the remaining refinements"):
        m.fit_method(trainer_factory(tmp_path, calls=calls), digits_dm(m))
    assert calls == [None, 1] and m.tree.n_leaves == 2  # the probe, then the raw split only


# ------------------------------------------------------------------------------ the tree's budget
def test_stage_plan_mirrors_the_stage_fits():
    """The clock's projection plans a stage as _run_stage does: epochs of floor(mass / batch) iterations
    (refinements: mass / 2), at least min_iters."""
    from genclust.methods.hc_mgan.clock import split_iterations, stage_epochs
    from genclust.methods.hc_mgan.settings import RawSplit, Refinement

    raw, ref = RawSplit(epochs=35, min_iters=2500), Refinement(count=2, epochs=6, min_iters=300)
    assert stage_epochs(10_000, "raw", raw, 50) == (35, 200)  # the budget tree's root: 7,000 iterations
    assert stage_epochs(3_000, "raw", raw, 50) == (42, 60)  # 35 x 60 < 2,500: the floor decides
    assert stage_epochs(10_000, "refine", ref, 50) == (6, 100)
    assert split_iterations(10_000, raw, ref, 50) == {"raw": 7000, "refine": 1200}
    assert split_iterations(10_000, raw, ref, 50, from_stage=2) == {"raw": 0, "refine": 600}
    m = make(k=3)
    dm = digits_dm(m)
    n = float(len(dm.fit_set))
    assert stage_epochs(n, "raw", m.raw, dm.batch_size)[1] == dm.batches_per_epoch(torch.ones(len(dm.fit_set)))
    assert stage_epochs(n, "refine", m.ref, dm.batch_size)[1] == dm.batches_per_epoch(torch.full((len(dm.fit_set),), 0.5))


def test_remaining_work_splits_the_heaviest_leaf_next():
    from genclust.methods.hc_mgan.clock import remaining_iterations
    from genclust.methods.hc_mgan.settings import RawSplit, Refinement

    raw, ref = RawSplit(epochs=1), Refinement(count=1, epochs=1)
    # root (mass 800, batch 100) before its raw split; one later split, of a child of 400 (halves assumed)
    work = remaining_iterations([], 800.0, None, 0, 1, 0.5, raw, ref, 100)
    assert work == {"raw": 8 + 4, "refine": 4 + 2}
    # children known (700 / 100), its refinement left, two later splits: 700, then the heavier of 630 / 100 / 70
    work = remaining_iterations([], 800.0, (700.0, 100.0), 1, 2, 0.1, raw, ref, 100)
    assert work == {"raw": 7 + 6, "refine": 4 + 3 + 3}


def test_clock_paces_only_when_the_rest_does_not_fit():
    from genclust.methods.hc_mgan.clock import REFINE_COST_GUESS, max_time_string, paced_epochs

    clock = TreeClock(100.0)
    assert clock.pace({"raw": 10**9, "refine": 0}) == 1.0  # nothing timed yet: the first stage runs as planned
    clock.record("raw", 10.0, 100)  # 0.1 s per raw iteration
    assert clock.seconds_per_iteration("refine") == pytest.approx(0.1 * REFINE_COST_GUESS)
    assert clock.pace({"raw": 100, "refine": 100}) == 1.0
    left = clock.left()
    assert clock.pace({"raw": 2000, "refine": 0}) == pytest.approx(left / 200.0, rel=1e-3)
    assert paced_epochs(35, 1.0) == 35 and paced_epochs(35, 0.5) == 17 and paced_epochs(35, 0.001) == 1
    assert max_time_string(0.2) == "00:00:00:01" and max_time_string(90061.5) == "01:01:01:02"


class IterationClock(TreeClock):
    """A TreeClock whose time is the iterations run, 0.1 s each: pacing that does not depend on the host."""

    spent = 0.0

    def record(self, kind, seconds, iterations):
        super().record(kind, 0.1 * iterations, iterations)
        self.spent += 0.1 * iterations

    def elapsed(self):
        return self.spent


def budget_trainer_factory(root, max_time, calls):
    def make_trainer(**overrides):
        calls.append((overrides.get("max_epochs"), overrides.get("max_time")))
        kwargs = dict(accelerator="cpu", max_epochs=1000, max_time=max_time, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(root))
        return pl.Trainer(**{**kwargs, **overrides})
    return make_trainer


def grow_on_fake_budget(budget_s, root, monkeypatch):
    from genclust.methods.hc_mgan import module

    monkeypatch.setattr(module, "TreeClock", lambda _max_time_s: IterationClock(budget_s))
    m = make(k=3, raw={"epochs": 4}, ref={"count": 1, "epochs": 4})
    calls = []
    m.fit_method(budget_trainer_factory(root, "00:01:00:00", calls), digits_dm(m))
    return m, [e for e, _ in calls[1:]], [t for _, t in calls[1:]]


def test_trainer_max_time_is_the_whole_trees_budget(tmp_path, monkeypatch):
    """Stages are paced so the whole tree fits trainer.max_time; a budget that fits changes nothing."""
    # batch 32 on 1,437 digits: the root's raw split is 4 x 44 iterations (17.6 s at 0.1 s each), its refinement
    # 4 x 22; the whole tree ~48 s (refinement iterations cost 0.1 s here, the projection guesses 0.2 at first)
    roomy, epochs, caps = grow_on_fake_budget(10_000.0, tmp_path / "roomy", monkeypatch)
    assert roomy.tree.n_leaves == 3 and epochs == [4, 4, 4, 4]
    assert [s["pace"] for s in roomy.tree.splits] == [[1.0, 1.0], [1.0, 1.0]]
    assert roomy.tree.splits[0]["iterations"] == [4 * 44, 4 * 22]
    assert all(cap is not None for cap in caps)  # the time left caps every stage fit
    # 32.6 s: after the root's raw split 15 s are left for ~35 s of projected work. The next stage is cut; each
    # later one is re-planned from the pace measured so far (the refinements turn out cheaper than guessed)
    tight, epochs, caps = grow_on_fake_budget(32.6, tmp_path / "tight", monkeypatch)
    paces = [p for s in tight.tree.splits for p in s["pace"]]
    assert tight.tree.n_leaves == 3 and epochs[0] == 4 and paces[0] == 1.0 and paces[1] < 0.5 and min(paces[2:]) < 1
    assert epochs[1:] == [max(1, int(4 * p)) if p < 1 else 4 for p in paces[1:]]
    assert tight.tree.splits[0]["iterations"][1] == epochs[1] * 22
    assert caps[0] == "00:00:00:33" and caps[1] == "00:00:00:15"  # what is left of the budget, rounded up
    spent = 0.1 * sum(n for s in tight.tree.splits for n in s["iterations"])
    assert spent <= 32.6 < 0.1 * sum(n for s in roomy.tree.splits for n in s["iterations"])
