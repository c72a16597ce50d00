"""Pass benchmarks of UC (generator training over K-means clusters) and NTP (ADMM pruning).

Each builder takes the profile's own recipe (``quick`` at scales smoke/cpu, ``colab`` at gpu),
shortens its schedule to a few steps on a few batches, and lists the model work that schedule
needs (see ``benchmarks/passes.py``). Models are untrained (timing does not depend on weights).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

import obstructlib as ob
from benchmarks.passes import FORWARD, Pass, Work, with_fields
from obstructlib.data import load_dataset, load_domain, seeded_subset
from obstructlib.engine import autocast, grad_scaler
from obstructlib.methods.ntp.method import NTPConfig, nt_loss, prune, train_target_head
from obstructlib.methods.ntp.steps import admm_init, admm_penalty, admm_step
from obstructlib.methods.uc.method import UCConfig, protect
from obstructlib.methods.uc.steps import _augment, project_noise, uc_loss
from obstructlib.models import create_model
from obstructlib.models.generator import ResnetGenerator
from obstructlib.models.surrogates import create_surrogate
from obstructlib.primitives.kmeans import kmeans
from obstructlib.primitives.pruning import apply_masks_, init_masks, prunable_parameters

# scale -> (profile, UC images, NTP (source, target) images (None: the profile's), UC image size (None: the
# profile's)). NTP keeps the profile's image size at every scale: colab prunes a CIFAR-stem ResNet-18 at 32 px,
# and at 224 px a 256 + 256 batch would need tens of GiB of activations.
_SIZES: dict[str, tuple[str, int, tuple[int | None, int | None], int | None]] = {
    "smoke": ("quick", 32, (32, 32), None),
    "cpu": ("quick", 1024, (None, None), None),
    "gpu": ("colab", 512, (512, 512), 224),
}


def _uc_recipe(scale: str, recipe: UCConfig) -> UCConfig:
    if scale == "smoke":
        return with_fields(recipe, epochs=1, batch_size=8, num_clusters=4)
    if scale == "gpu":
        return with_fields(recipe, epochs=1)  # colab recipe, one epoch per generator
    return recipe  # cpu: the quick recipe as it is (3 epochs per generator) on fewer images


def uc(scale: str, device: torch.device) -> Pass:
    """Unlearnable Clusters (arXiv 2301.01217): features, K-means, one generator per cluster, noise."""
    profile, n, _, size = _SIZES[scale]
    run_cfg = ob.config_for("uc", profile)
    recipe = _uc_recipe(scale, run_cfg.uc)
    size = size or run_cfg.image_size
    dataset = run_cfg.dataset if profile == "quick" else "synthetic"
    data = seeded_subset(load_dataset(dataset, None, "train", image_size=size, channels=3, progress=False), n, seed=0)
    torch.manual_seed(0)
    kind, _, arch = recipe.surrogate.partition(":")
    if kind in ("simclr", "classifier"):  # an untrained network of the pretrained surrogate's architecture
        model: torch.nn.Module = create_model(arch, num_classes=len(data.classes)).to(device)
        unit_sur = create_surrogate(copy.deepcopy(model), image_size=recipe.surrogate_image_size, device=device,
                                    label=recipe.surrogate)
    else:  # rn50 / clip: the named network without its pretrained weights (no download)
        model = create_surrogate(recipe.surrogate, pretrained=None, image_size=recipe.surrogate_image_size,
                                 device=device)
        unit_sur = copy.deepcopy(model)
    B, p, E = recipe.batch_size, recipe.num_clusters, recipe.epochs
    batches = math.ceil(n / B)
    images = torch.stack([data[i][0] for i in range(n)]).to(device)
    x = images[:B]
    c, h, w = x.shape[1:]

    @torch.no_grad()
    def features(batch: torch.Tensor = x) -> torch.Tensor:
        with autocast(device):  # extract_features' autocast (on regardless of cfg.amp)
            return unit_sur(batch).float()

    feats = torch.cat([features(images[i:i + B]) for i in range(0, n, B)])

    def cluster() -> None:  # the same K-means call on the same features as protect()
        kmeans(feats, p, iters=recipe.kmeans_iters, generator=torch.Generator().manual_seed(recipe.seed),
               n_init=recipe.kmeans_n_init)

    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        gen = ResnetGenerator(c, c, recipe.ngf, recipe.n_blocks).to(device).train()
    z = torch.rand(1, c, h, w, generator=g).to(device)
    target = feats[0].clone()
    opt = torch.optim.Adam(gen.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10**6, eta_min=recipe.min_lr)
    scaler = grad_scaler(device, recipe.amp)

    def gen_step() -> None:  # train_generator's step body
        xa = _augment(x, g) if recipe.augment else x
        delta = project_noise(gen(z), recipe.eps, recipe.norm)
        with autocast(device, recipe.amp):
            f = unit_sur((xa + delta).clamp(0, 1))
        loss = uc_loss(f.float(), target)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        loss.item()

    @torch.no_grad()
    def noise() -> None:
        project_noise(gen(z), recipe.eps, recipe.norm)[0].float().cpu()

    # train_on="all" (both profiles): every generator trains on every image; "cluster": its members only
    steps = p * E * batches if recipe.train_on == "all" else E * (batches + p)  # cluster: an upper bound
    work = [Work(f"surrogate feature forward, batch {B}", batches, features, passes=FORWARD),
            Work(f"K-means ({p} clusters, {recipe.kmeans_n_init} restarts x <= {recipe.kmeans_iters} iters) "
                 f"on {n} features", 1, cluster, passes=0),
            Work(f"generator step (augment, G fwd, projection, surrogate fwd+bwd to the input, G bwd, Adam), "
                 f"batch {B}", steps, gen_step),
            Work("final noise: generator forward on z", p, noise, passes=FORWARD)]
    return Pass(name="uc", run=lambda: protect(data, recipe, surrogate=model, device=device, progress=False),
                schedule=(f"features ({batches} batches), K-means, {p} generators x {E} epoch(s) x {batches} "
                          f"batches (train_on={recipe.train_on}), {p} noise forwards"),
                work=work, train_step=gen_step,
                setting={"profile": profile, "arch": recipe.surrogate, "image_size": size, "images": n, "batch": B,
                         "generator": f"ngf={recipe.ngf} n_blocks={recipe.n_blocks}"},
                note=("not counted: caching the images (one DataLoader pass) and indexing batches out of the cache, "
                      "building each generator with its Adam and scheduler, the int8 noise store"))


def _ntp_recipe(scale: str, recipe: NTPConfig) -> NTPConfig:
    # max_iters == min_iters: the data-dependent stopping rule never fires, the schedule is exact
    if scale == "smoke":
        return with_fields(recipe, max_iters=1, min_iters=1, epochs=1, batch_size=8)
    if scale == "gpu":
        return with_fields(recipe, max_iters=2, min_iters=2, epochs=1)
    return with_fields(recipe, max_iters=recipe.min_iters)  # cpu: the quick recipe's minimum of ADMM iterations


def ntp(scale: str, device: torch.device) -> Pass:
    """Non-Transferable Pruning (arXiv 2410.08015): ADMM over the encoder on zipped (S, T) batches."""
    profile, _, (n_s, n_t), _ = _SIZES[scale]
    run_cfg = ob.config_for("ntp", profile)
    recipe = _ntp_recipe(scale, run_cfg.ntp)
    size = run_cfg.image_size
    source, target = (run_cfg.source, run_cfg.target) if profile == "quick" else ("synthetic", "synthetic+mnistm")
    # the runner's owner sets at prune_ratio 1 (quick): all source images, max_target_train target images
    s_own = load_domain(source, "train", image_size=size, max_samples=n_s or run_cfg.max_source_train, seed=0)
    t_own = load_domain(target, "train", image_size=size, max_samples=n_t or run_cfg.max_target_train, seed=1)
    torch.manual_seed(0)
    model = create_model(run_cfg.arch, num_classes=len(s_own.classes)).to(device).eval()
    head = train_target_head(model, t_own, with_fields(recipe, head_epochs=1), device)  # stage 1, not in the pass
    unit = copy.deepcopy(model)
    unit_head = copy.deepcopy(head)
    encoder = unit.encoder
    bs = min(recipe.batch_size, len(s_own), len(t_own))
    xs = torch.stack([s_own[i][0] for i in range(bs)]).to(device)
    ys = torch.as_tensor([s_own[i][1] for i in range(bs)], device=device)
    xt = torch.stack([t_own[i][0] for i in range(bs)]).to(device)
    yt = torch.as_tensor([t_own[i][1] for i in range(bs)], device=device)
    for q in unit.head.parameters():
        q.requires_grad_(False)
    state = admm_init(encoder, init_masks(encoder, recipe.prune_bn))
    params = list(prunable_parameters(encoder, recipe.prune_bn).values())
    opt = torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)

    def w_step() -> None:  # prune()'s W-step body
        encoder.train()
        loss, _ = nt_loss(unit, unit_head, xs, ys, xt, yt, recipe)
        total = loss + admm_penalty(encoder, state, recipe.rho, recipe.squared_penalty)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        apply_masks_(encoder, state.masks)
        loss.item()

    def z_u_step() -> None:
        admm_step(encoder, state, recipe.rho, recipe.gamma)

    plain = copy.deepcopy(model)
    plain_opt = torch.optim.Adam(plain.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)

    def train_step() -> None:
        plain.train()
        loss = F.cross_entropy(plain(xs), ys)
        plain_opt.zero_grad(set_to_none=True)
        loss.backward()
        plain_opt.step()

    rb = min(256, len(s_own))  # recalibrate_bn's batch
    xr = torch.stack([s_own[i][0] for i in range(rb)]).to(device)

    @torch.no_grad()
    def bn_forward() -> None:
        unit.train()
        unit(xr)
        unit.eval()

    iters, E = recipe.max_iters, recipe.epochs
    per_epoch = min(len(s_own), len(t_own)) // bs  # zip of two drop_last loaders
    work = [Work(f"W-step: NT loss on a source and a target batch (+ Fisher ratio, ADMM penalty), "
                 f"backward, Adam, masks; batch {bs}+{bs}", iters * E * per_epoch, w_step, passes=2),
            Work("ADMM Z/U/mask update (element-wise)", iters, z_u_step, passes=0)]
    if recipe.recalibrate_bn:
        # recalibrate_bn: one pass over S in batches of 256 (the last one partial, counted pro rata)
        work.append(Work(f"BatchNorm recalibration forward (train mode), batch {rb}", round(len(s_own) / rb, 3),
                         bn_forward, passes=FORWARD * rb / bs))
    return Pass(name="ntp",
                run=lambda: prune(model, recipe, source=s_own, target=t_own, target_head=head, device=device,
                                  progress=False),
                schedule=(f"{iters} ADMM iterations x {E} epochs x {per_epoch} (S, T) batch pairs, Z/U update per "
                          "iteration" + (", BN recalibration on S" if recipe.recalibrate_bn else "")),
                work=work, train_step=train_step,
                setting={"profile": profile, "arch": run_cfg.arch, "image_size": size,
                         "images": f"{len(s_own)} S + {len(t_own)} T", "batch": bs},
                note=("stage 1 (train_target_head) runs before prune() and is not part of the pass; not counted: "
                      "the (S, T) DataLoaders, admm_init, a fresh Adam and a sparsity_report per iteration"))
