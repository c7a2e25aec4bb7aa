"""HC-MGAN's tree figures (paper Fig. 5/6 and supplementary Fig. 7), drawn from a ``Tree`` and the fit set.

* ``hc_mgan_tree.png``: per node a 5x5 grid of real fit-set examples drawn in proportion to s_k, with a
  key of the class masses sum_i s_k,i 1(c_i = A) in a font size that grows with the mass (labels are
  used for this picture only). Leaves get a dashed red frame.
* ``hc_mgan_tree_generated.png``: per node the samples of the generator(s) that represent it at the
  split's last stage (red frame) next to the real grid (green frame), as in Fig. 7.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from genclust.nets.blocks import eval_mode

if TYPE_CHECKING:  # pragma: no cover
    from genclust.methods.hc_mgan.tree import Tree

FMNIST_NAMES = ("tshirt", "pants", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def _class_names(dataset: str, n: int) -> list[str]:
    name = dataset.lower()
    if ("fmnist" in name or "fashion" in name) and n == 10:
        return list(FMNIST_NAMES)
    return [str(i) for i in range(n)]


def _grid(images: Tensor, nrow: int = 5) -> Tensor:
    from genclust.viz.figures import grid_image

    if images.dim() == 2:  # vector data: nothing to draw
        return torch.zeros(3, 8, 8)
    return grid_image(images, nrow=nrow, padding=1, pad_value=1.0)


def _layout(tree: Tree) -> dict[int, tuple[float, int]]:
    """x (in-order leaf slots) and depth for each node."""
    nodes, pos, slot = tree.nodes, {}, [0]

    def visit(k: int) -> float:
        children = nodes[k]["children"]
        if not children:
            x = float(slot[0])
            slot[0] += 1
        else:
            x = sum(visit(c) for c in children) / 2.0
        pos[k] = (x, nodes[k]["depth"])
        return x

    visit(0)
    return pos


def save_tree_figures(tree: Tree, out_dir: Path, img_shape: Sequence[int], generate_node: Callable[[int, int], Tensor],
                      to_unit_range: Callable[[Tensor], Tensor], fit_x: Tensor | None = None,
                      fit_y: Tensor | None = None, dataset: str = "") -> list[Path]:
    """The tree figures and ``hc_mgan_class_mass.json`` in ``out_dir``.

    ``generate_node(node, n)``: n images of a node's generator(s) in the method's pixel range;
    ``to_unit_range``: those images in [0, 1]; ``fit_x`` / ``fit_y``: the fit set the tree was grown on
    (real grids; labels only for the class key), ``dataset``: its name (class names).
    """
    if not tree.initialized or len(img_shape) != 3:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    real: dict[int, Tensor] = {}
    keys: dict[int, list[tuple[str, float]]] = {}
    class_mass: dict[int, list[float]] = {}
    if fit_x is not None and tree.n_fit == len(fit_x):
        y = fit_y
        n_cls = int(y.max()) + 1 if y is not None and len(y) else 0
        names = _class_names(dataset, n_cls)
        for node in tree.nodes:
            s = tree.memberships[node["id"]]
            idx = torch.multinomial(s.float() / s.sum(), 25, replacement=True, generator=g)
            real[node["id"]] = _grid(to_unit_range(fit_x[idx].float()))
            if y is not None:
                mass = torch.zeros(n_cls, dtype=torch.float64).index_add_(0, y.long(), s)
                class_mass[node["id"]] = mass.tolist()
                frac = (mass / mass.sum()).tolist()
                keys[node["id"]] = sorted(((names[c], f) for c, f in enumerate(frac) if f >= 0.02),
                                          key=lambda t: -t[1])
    generated: dict[int, Tensor] = {}
    with eval_mode(tree), torch.no_grad():
        for node in tree.nodes[1:]:
            generated[node["id"]] = _grid(to_unit_range(generate_node(node["id"], 25).float()))

    paths = []
    if class_mass:
        paths.append(_write_class_masses(tree, class_mass, out_dir / "hc_mgan_class_mass.json"))
    pos = _layout(tree)
    n_slots = max(x for x, _ in pos.values()) + 1
    depth = max(d for _, d in pos.values()) + 1
    for name, panels in (("hc_mgan_tree.png", ("real",)), ("hc_mgan_tree_generated.png", ("real", "generated"))):
        if name == "hc_mgan_tree.png" and not real:
            continue
        side, gap, key_w, row_h = 1.5, 0.1, 1.0 if keys else 0.2, 2.2  # inches
        cell_w = len(panels) * (side + gap) + key_w
        fig_w, fig_h = n_slots * cell_w, depth * row_h
        fig = plt.figure(figsize=(fig_w, fig_h))
        back = fig.add_axes([0, 0, 1, 1])
        back.set_xlim(0, fig_w)
        back.set_ylim(fig_h, 0)
        back.axis("off")

        # per node: left edge, top edge and centre of its panels (inches)
        anchors = {k: (x * cell_w + gap, d * row_h + 0.35, x * cell_w + gap + len(panels) * (side + gap) / 2)
                   for k, (x, d) in pos.items()}

        for node in tree.nodes:
            k = node["id"]
            left, top, centre = anchors[k]
            for c in node["children"] or []:
                _, ctop, ccentre = anchors[c]
                back.plot([centre, ccentre], [top + side, ctop - 0.05], color="0.6", lw=1, zorder=0)
            back.text(centre, top - 0.08, f"s{k} (mass {node['mass']:.0f})", ha="center", va="bottom", fontsize=8)
            leaf = not node["children"]
            for i, p in enumerate(panels):
                im = real.get(k) if p == "real" else generated.get(k)
                if im is None:
                    continue
                x0 = left + i * (side + gap)
                ax = fig.add_axes([x0 / fig_w, 1 - (top + side) / fig_h, side / fig_w, side / fig_h])
                ax.imshow(im.permute(1, 2, 0).numpy(), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if len(panels) > 1:
                    color, style, lw = ("green" if p == "real" else "red"), "-", 2
                else:
                    color, style, lw = ("red", "--", 2) if leaf else ("0.3", "-", 1)
                for spine in ax.spines.values():
                    spine.set_edgecolor(color)
                    spine.set_linestyle(style)
                    spine.set_linewidth(lw)
            if k in keys:
                kx = left + len(panels) * (side + gap)
                for r, (cname, f) in enumerate(keys[k][:8]):
                    back.text(kx, top + 0.05 + r * side / 8, cname, fontsize=5 + 9 * f ** 0.5, va="top", ha="left")
        path = out_dir / name
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def _write_class_masses(tree: Tree, class_mass: dict[int, list[float]], path: Path) -> Path:
    """Per node sum_i s_k,i 1(c_i = A) (the figure's key) and, per split, each class's share of the
    node's class mass that went to the first child and to its majority side."""
    splits = []
    for s in tree.splits:
        parent, first = class_mass[s["node"]], class_mass[s["children"][0]]
        share = [f / p if p > 0 else 0.0 for f, p in zip(first, parent)]
        splits.append({"split": s["index"], "node": s["node"], "children": s["children"],
                       "first_child_share": share, "majority_share": [max(v, 1 - v) for v in share]})
    path.write_text(json.dumps({"nodes": {str(k): v for k, v in class_mass.items()}, "splits": splits}, indent=1))
    return path
