"""Cross-view association: per-view proposals whose ids mean nothing across views -> one 3D object.

Seed masks (a prompt's first mask, or the masks a user gave for a few views) are voted into 3D; the
selection is rendered into every other view; each view's proposals that agree with the rendered selection
become that view's mask; all views vote again; repeat until the selection stops changing.

**Atoms.** A view's proposals (SAM masks overlapping at several granularities, or photo superpixels) cut
its pixels into *atoms*: connected regions whose pixels lie in the same set of proposals. Every union of
proposals is a union of atoms, and both the rendered selection and the vote are linear in the pixels, so
one vote pass with the atom map as labels (``mass[n, a]`` = α·T mass of Gaussian n on atom a) gives
everything the rounds need without touching the renderer again:

- the rendered selection on atom a: ``r[a] = Σ_n s_n mass[n, a]`` (s = the selection's indicator; this is the
  in-scene render of the selection, summed over the atom's pixels);
- the vote of a mask made of atoms: inside = Σ over its atoms of ``mass[n, a]``, outside = the rest.

**The rule** (documented in the README; constants below):

1. an atom joins the view's mask when the rendered selection covers at least ``ATOM_MAJORITY`` of it on
   average (``r[a] / area[a] >= 0.5``; ``PARTITION_MAJORITY`` = 0.6 for superpixels, see there): the
   selection's silhouette snapped to the proposals' edges; an atom
   covered less than that but more than ``ATOM_OUTSIDE`` (0.1) does not vote at all this round (uncertain:
   often a part of the object the selection does not reach yet, which must not vote against itself). The
   granularity is the 3D selection's: a whole object's atoms are all covered whether SAM gave it whole or
   in parts, a region merging the object with background splits into atoms by the masks that separate them;
2. the view is used when the soft IoU of that mask with the rendered selection is at least
   ``VIEW_AGREEMENT`` (the proposals explain what the model shows); otherwise it does not vote this round;
3. seed views of user masks keep their masks (a prompt's first mask only starts the first round: its view is
   then associated like the others); every used view votes; the selection is re-decided with the job's
   margin, unseen Gaussians staying unselected (propagating labels to them inside the rounds let the
   selection leak into the ground under an object: measured on the demo scene, precision 0.31 -> 0.98);
   the rounds stop when fewer than ``STOP_FRACTION`` of the Gaussians change, or after ``rounds``;
4. a clean-up pass recomputes the votes from the last selection with no abstention (every atom of every
   used view votes in or out), and the job decides from those, propagating to unseen Gaussians.

Measured on maryRose and the demo scene (benchmarks/seg_quality.py): abstention in the rounds plus the
clean-up pass was the best or tied of the variants tried (with / without the band, propagation, margins).

Known limit, photos without SAM: a Gaussian hidden behind the object in the seed view has all of its
little mass inside the seed mask, so it starts selected; SAM proposals of the other views vote it out, but
superpixels of a different object's surface, partly covered by it, abstain or join. On the demo scene
(occluding objects) photo proposals reach held-out IoU 0.5-0.8 where SAM-like proposals reach 1.0; on a
single object on a plain background (maryRose) they work (README). Dropping Gaussians the seed view barely
sees cost the SAM path more recall than it saved the photo path precision (tried, not kept).

Several labels (multi-label seed masks) work the same way per label; an atom goes to the label covering it
most; a view is used when every label it shows passes rule 2.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

import numpy as np
import torch

from segmentation.voting import make_selection, vote_view
from utils.masks import ViewProposals

ATOM_MAJORITY = 0.5      # mean rendered selection over an atom for it to join the mask
# The same for a partition (photo superpixels): a superpixel cannot follow the object's outline the way a SAM
# mask does, and one straddling the silhouette, half covered by the blurred rendered edge, drags background
# into the mask. Measured (benchmarks/seg_quality.py on maryRose, the demo scene of tests/test_association.py),
# 0.5 -> 0.6: maryRose photo completion K = 1 / 3 / 5 object-alone mIoU 0.921 / 0.923 / 0.914 -> 0.939 / 0.938
# / 0.924, in-scene 0.928 / 0.933 / 0.920 -> 0.929 / 0.929 / 0.931, box prompt 0.912 -> 0.914; demo box prompt
# held-out IoU 0.79 -> 0.93 in-scene, 0.65 -> 0.81 object-alone, one-mask completion 0.85 -> 0.84. Higher
# values (0.65, 0.7) raised maryRose's object-alone scores further but cost the demo's completion recall.
PARTITION_MAJORITY = 0.6
ATOM_OUTSIDE = 0.1       # below this an atom votes "outside"; between the two it does not vote (uncertain)
VIEW_AGREEMENT = 0.5     # soft IoU between a view's associated mask and its rendered selection
STOP_FRACTION = 0.001    # stop when fewer than this fraction of the Gaussians change label
DEFAULT_ROUNDS = 4
# Atoms smaller than this fraction of the view (slivers between nearly coincident proposal edges) are
# absorbed by the nearest larger atom: fewer labels to vote, the same masks up to a few pixels.
MIN_ATOM_FRACTION = 2e-4
# A label "shows" in a view (and must then be explained by its proposals) above this rendered area fraction.
VISIBLE_FRACTION = 0.002


# ---------------------------------------------------------------------------------------------------------
# Atoms of one view
# ---------------------------------------------------------------------------------------------------------
def atoms_of(proposals: ViewProposals) -> np.ndarray:  # -> [H, W] int32 atom ids 0..M-1
    """Connected regions of pixels that lie in the same set of proposals (see the module docstring)."""
    from scipy import ndimage
    from skimage.measure import label as connected

    if proposals.partition is not None:
        sig = proposals.partition.astype(np.int64)
    else:
        masks = proposals.masks  # [K, H, W]
        k, h, w = masks.shape
        if k == 0:
            sig = np.zeros((h, w), np.int64)
        else:
            if k <= 62:  # the membership bits as one integer per pixel (labelling needs only equality)
                sig = np.zeros((h, w), np.int64)
                for i in range(k):
                    sig[masks[i].astype(bool, copy=False)] |= np.int64(1) << i
            else:
                packed = np.packbits(masks.reshape(k, -1), axis=0).T  # [HW, ceil(K/8)] membership bits
                rows = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1]))).ravel()
                sig = np.unique(rows, return_inverse=True)[1].reshape(h, w).astype(np.int64)
    regions = connected(sig + 1, connectivity=1, background=0).astype(np.int64) - 1
    h, w = regions.shape
    area = np.bincount(regions.ravel())
    small = area[regions] < max(1.0, MIN_ATOM_FRACTION * h * w)
    if small.any() and not small.all():
        # every pixel of a sliver takes the atom of the nearest pixel that is not in a sliver
        idx = ndimage.distance_transform_edt(small, return_distances=False, return_indices=True)
        regions = regions[idx[0], idx[1]]
    present = np.zeros(int(regions.max()) + 1, bool)
    present[regions] = True
    rank = np.cumsum(present) - 1  # ids that survived, renumbered 0..M-1 in order (np.unique's inverse)
    return rank[regions].astype(np.int32)


@dataclass
class AtomVotes:
    """α·T mass of every Gaussian on every atom of one view, as sparse triplets (zero masses left out)."""

    name: str
    area: np.ndarray     # [M] pixels per atom
    gid: np.ndarray      # [E] int32 Gaussian index
    atom: np.ndarray     # [E] int32 atom index
    mass: np.ndarray     # [E] float32
    atoms: np.ndarray    # [H, W] uint16/int32 atom map (to write the view's mask)
    member: Optional[np.ndarray] = None  # [M, K] bool: atom a lies in proposal k (None for a partition)

    @property
    def nbytes(self) -> int:
        return self.gid.nbytes + self.atom.nbytes + self.mass.nbytes + self.atoms.nbytes + self.area.nbytes

    def best_proposal_iou(self, s: np.ndarray) -> float:
        """The soft IoU of the rendered selection (s: [N, 1]) with the single proposal that matches it best:
        how much SAM, in this view, sees the selection as one thing. Partitions: the atom agreement."""
        if self.member is None or self.member.shape[1] == 0:
            return decide_view(self, s).agreement
        r = self.render(s)[:, 0]
        inter = r @ self.member
        area = self.area @ self.member
        return float(np.max(inter / (area + r.sum() - inter + 1e-9)))

    def render(self, s: np.ndarray) -> np.ndarray:  # s: [N, L] float -> [M, L] rendered mass per atom
        return np.stack([np.bincount(self.atom, weights=self.mass * s[self.gid, l], minlength=len(self.area))
                         for l in range(s.shape[1])], axis=1)

    def vote(self, atom_label: np.ndarray, n: int, num_labels: int) -> np.ndarray:  # -> [N, L+1] float64
        """Votes of the mask giving atom a the label atom_label[a] (0 = background, -1 = no vote)."""
        lab = atom_label[self.atom]
        keep = lab >= 0
        # one bincount over (gaussian, label) cells: each cell sums the same masses in the same order as a
        # bincount per label would
        cell = self.gid[keep].astype(np.int64) * (num_labels + 1) + lab[keep]
        return np.bincount(cell, weights=self.mass[keep], minlength=n * (num_labels + 1)).reshape(n, num_labels + 1)


def membership(atoms: np.ndarray, proposals: ViewProposals) -> Optional[np.ndarray]:  # -> [M, K] bool
    """Atom a belongs to proposal k when most of its pixels do (slivers were absorbed, so not all need to)."""
    if proposals.masks is None:
        return None
    m = int(atoms.max()) + 1
    area = np.bincount(atoms.ravel(), minlength=m)
    flat = atoms.ravel()
    return np.stack([np.bincount(flat[mk.ravel()], minlength=m) * 2 > area for mk in proposals.masks], axis=1) \
        if len(proposals.masks) else np.zeros((m, 0), bool)


def vote_atoms(camera: Any, gaussians: Any, atoms: np.ndarray, name: str, backend: str = "auto",
               num_threads: int = 0, member: Optional[np.ndarray] = None) -> AtomVotes:
    """One vote pass of a view with its atom map as the label map (sparse output: no [N, M] array).

    atoms: np.ndarray  # [H, W] int32 atom ids 0..M-1
    """
    import gaussian_renderer

    m = int(atoms.max()) + 1
    area = np.bincount(atoms.ravel(), minlength=m)
    small = atoms.astype(np.uint16) if m < 65536 else atoms
    with torch.no_grad():
        g, a, v = gaussian_renderer.vote_labels(camera, gaussians, torch.from_numpy(atoms), m - 1,
                                                backend=backend, num_threads=num_threads, sparse=True)
    return AtomVotes(name, area, g.numpy().astype(np.int32), a.numpy().astype(np.int32),
                     v.numpy().astype(np.float32), small, member)


# ---------------------------------------------------------------------------------------------------------
# The rounds
# ---------------------------------------------------------------------------------------------------------
@dataclass
class ViewDecision:
    """What one round decided for one view."""

    used: bool
    agreement: float                # min over visible labels of the soft IoU (rule 2); 1 if nothing shows
    atom_label: np.ndarray          # [M] label per atom (0 background)


@dataclass
class RoundLog:
    round: int
    views_used: int
    views: int
    selected: int
    changed: int
    seconds: float


@dataclass
class AssociationResult:
    votes: np.ndarray                             # [N, L+1] float64: seeds + every view used in the last round
    decisions: dict[str, ViewDecision]            # per associated (non-seed) view, last round
    rounds: list[RoundLog] = field(default_factory=list)
    seconds_atoms: float = 0.0                    # reading proposals, atoms and their vote pass
    atom_bytes: int = 0

    @property
    def used_views(self) -> list[str]:
        return [n for n, d in self.decisions.items() if d.used]


def decide_view(av: AtomVotes, s: np.ndarray, band: bool = True) -> ViewDecision:
    """Rules 1 and 2 for one view. s: [N, L] float indicator of each label's selection; band: atoms between
    ATOM_OUTSIDE and the join level (ATOM_MAJORITY, PARTITION_MAJORITY for a partition) abstain (the rounds)
    rather than vote outside (the clean-up pass)."""
    r = av.render(s)                                  # [M, L]
    cover = r / np.maximum(av.area, 1)[:, None]
    best = cover.argmax(axis=1)
    top = cover[np.arange(len(best)), best]
    join = PARTITION_MAJORITY if av.member is None else ATOM_MAJORITY
    low = ATOM_OUTSIDE if band else join
    atom_label = np.where(top >= join, best + 1, np.where(top > low, -1, 0))
    total = av.area.sum()
    agreement = 1.0
    for l in range(s.shape[1]):
        shown = r[:, l].sum()
        if shown < VISIBLE_FRACTION * total:
            continue
        inside = atom_label == l + 1
        inter = r[inside, l].sum()
        iou = inter / (av.area[inside].sum() + shown - inter + 1e-9)
        agreement = min(agreement, float(iou))
    return ViewDecision(bool(agreement >= VIEW_AGREEMENT and (atom_label > 0).any()), agreement, atom_label)


def _round_votes(atom_views: list[AtomVotes], s: np.ndarray, base: np.ndarray, num_labels: int, band: bool
                 ) -> tuple[np.ndarray, dict[str, ViewDecision]]:
    """Votes of one round: ``base`` plus every used view's mask for the selection s [N, L] (rules 1-2)."""
    votes = base.copy()
    decisions = {}
    for av in atom_views:
        d = decide_view(av, s, band)
        decisions[av.name] = d
        if d.used:
            votes += av.vote(d.atom_label, base.shape[0], num_labels)
    return votes, decisions


def associate(gaussians: Any, seed_votes: np.ndarray, atom_views: list[AtomVotes], num_labels: int,
              margin: float = 0.0, rounds: int = DEFAULT_ROUNDS, keep_seeds: bool = True,
              log: Callable[[str], None] = lambda s: None) -> AssociationResult:
    """Run the rounds (rules 1-3) from ``seed_votes`` [N, L+1] over ``atom_views``; the returned votes are
    the clean-up pass's (every atom of every used view votes, no abstention).

    keep_seeds: the seed votes stay in every round (masks a user drew: the seed views are not in
    ``atom_views``); False: they only start round 1 (a prompt's first mask is a guess too: its view is in
    ``atom_views`` and is associated like the others, so a SAM mask that merged the object with background
    there loses the background the other views do not confirm)."""
    n = seed_votes.shape[0]
    xyz = gaussians.get_xyz.detach().cpu().numpy()
    base = seed_votes if keep_seeds else np.zeros_like(seed_votes)

    def indicator(labels: np.ndarray) -> np.ndarray:  # [N, L]
        return np.stack([(labels == l).astype(np.float64) for l in range(1, num_labels + 1)], axis=1)

    prev = make_selection(seed_votes, xyz, margin, "keep").labels
    result = AssociationResult(seed_votes, {})
    for r in range(1, max(1, rounds) + 1):
        t = time.perf_counter()
        votes, decisions = _round_votes(atom_views, indicator(prev), base, num_labels, band=True)
        labels = make_selection(votes, xyz, margin, "keep").labels
        changed = int((labels != prev).sum())
        prev = labels
        used = int(sum(d.used for d in decisions.values()))
        entry = RoundLog(r, used, len(atom_views), int((labels >= 1).sum()), changed,
                         round(time.perf_counter() - t, 4))
        result.rounds.append(entry)
        log(f"round {r}: {used} of {len(atom_views)} views associated, {entry.selected:,} Gaussians selected, "
            f"{changed:,} changed")
        if changed < STOP_FRACTION * n:
            break
    result.votes, result.decisions = _round_votes(atom_views, indicator(prev), base, num_labels, band=False)
    return result


NEAR_VIEWS = 4  # views nearest to the prompt's view that judge a candidate seed (consistency)


def nearest_views(camera: Any, atom_views: list[AtomVotes], cameras: dict[str, Any], k: int = NEAR_VIEWS
                  ) -> list[AtomVotes]:
    """The ``k`` atom views whose viewing direction is closest to ``camera``'s."""
    def forward(cam: Any) -> np.ndarray:
        return np.asarray(cam.world_to_camera, dtype=np.float64)[2, :3]

    f0 = forward(camera)
    others = [av for av in atom_views if av.name != camera.image_name]
    order = sorted(others, key=lambda av: -float(forward(cameras[av.name]) @ f0))
    return order[:k]


def consistency(gaussians: Any, seed_votes: np.ndarray, atom_views: list[AtomVotes], near: list[AtomVotes],
                margin: float = 0.0) -> float:
    """Whether other views see a seed as ONE object. The seed is associated for one round (every view's
    proposals vote with it), and this is the mean, over the ``near`` views that show the result, of its
    IoU with their best-matching single proposal. An object is segmented whole in most views; a mask that
    merged it with a piece of background in the prompt view is rarely proposed again elsewhere, so its
    association stays two things that no single proposal covers."""
    result = associate(gaussians, seed_votes, atom_views, 1, margin, rounds=1, keep_seeds=False)
    labels = make_selection(result.votes, gaussians.get_xyz.detach().cpu().numpy(), margin, "keep").labels
    s = (labels == 1).astype(np.float64)[:, None]
    scores = [av.best_proposal_iou(s) for av in near if av.render(s).sum() >= VISIBLE_FRACTION * av.area.sum()]
    return float(np.mean(scores)) if scores else 0.0


def atom_label_map(av: AtomVotes, atom_label: np.ndarray) -> np.ndarray:  # -> [H, W] int32
    """The view's associated mask (uncertain atoms are background in the picture)."""
    return np.maximum(atom_label, 0)[av.atoms.astype(np.int64)].astype(np.int32)


def build_atom_views(gaussians: Any, proposals: Iterable[tuple[Any, ViewProposals]], skip: set[str],
                     backend: str = "auto", num_threads: int = 0, progress: bool = True,
                     total: Optional[int] = None) -> tuple[list[AtomVotes], float]:
    """Atoms + their vote pass for every view not in ``skip`` (a tqdm bar on a terminal)."""
    from tqdm import tqdm

    from gaussian_renderer import prepare_gaussians

    t = time.perf_counter()
    prepared = prepare_gaussians(gaussians)  # activations once, not once per view
    out = []
    bar = tqdm(proposals, total=total, desc="proposals", unit="view", disable=None if progress else True,
               leave=False, dynamic_ncols=True)
    for cam, vp in bar:
        if cam.image_name in skip:
            continue
        atoms = atoms_of(vp)
        out.append(vote_atoms(cam, prepared, atoms, cam.image_name, backend, num_threads, membership(atoms, vp)))
    return out, time.perf_counter() - t


def seed_votes_of(gaussians: Any, seeds: Iterable[tuple[Any, np.ndarray]], num_labels: int, backend: str = "auto",
                  num_threads: int = 0) -> np.ndarray:  # -> [N, L+1]
    """Exact votes of the seed masks (label maps at view resolution)."""
    from gaussian_renderer import prepare_gaussians

    prepared = prepare_gaussians(gaussians)
    votes = np.zeros((len(prepared), num_labels + 1))
    with torch.no_grad():
        for cam, lm in seeds:
            votes += vote_view(cam, prepared, lm, num_labels, backend, num_threads).cpu().numpy()
    return votes
