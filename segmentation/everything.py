"""Every object of the scene from per-view SAM proposals: instance ids that are consistent in 3D, training-free.

SAM's automatic mask generator numbers its masks per image; the 3D model is what ties them together. With
the atom votes of every view (segmentation.association: one label-map vote pass per view), everything
below is sparse arithmetic over those votes, no renderer:

1. **Support.** Proposal k of view w is *supported* by the Gaussians that put most (>= ``SUPPORT``) of their
   α·T mass in view w inside it: its 3D footprint as that view sees it.
2. **Matching.** The support is rendered into the ``NEIGHBOURS`` views nearest to w (per-atom renders, as in
   the association) and compared with each proposal there: soft IoU of the render with the proposal. Two
   proposals of two views *match* when each one's support renders onto the other with IoU >= ``MATCH_IOU``
   (mutual). Granularities separate by themselves: a whole object matches whole objects, a part matches
   the same part; a mask that merged the object with background in one view matches nothing.
3. **Instances.** Connected components of the match graph. A component whose proposals come from fewer
   than ``MIN_VIEWS`` views is unstable and dropped.
4. **Votes.** Instance i's vote for Gaussian n: over the proposals of i, mass inside minus mass outside (the
   paper's rule, per view where i was proposed); n is a candidate of every instance with a positive vote.
5. **Nesting** (whole objects vs their parts): an instance whose candidates lie for >= ``NESTED`` inside
   another's is a part of it; the default (``granularity="whole"``) merges its proposals into the larger
   instance, ``"part"`` keeps it and carves it out (each Gaussian then takes the most specific instance).
6. **Assignment.** Each Gaussian takes the candidate instance with the largest normalised vote
   (in - out) / (in + out); Gaussians seen by some view but by no instance are background (0), Gaussians no
   view sees are undecided (-1). Instances with fewer than ``min_gaussians`` Gaussians become background.
Ids are renumbered 1..I by decreasing size.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from segmentation.association import VISIBLE_FRACTION, AtomVotes

SUPPORT = 0.5        # share of a Gaussian's mass in a view that must lie inside a proposal to support it
MATCH_IOU = 0.5      # mutual soft IoU of two proposals' rendered supports for a match
NEIGHBOURS = 6       # views each view's proposals are compared with (nearest viewing directions)
MIN_VIEWS = 3        # an instance must be proposed in at least this many views
NESTED = 0.6         # share of an instance's candidates inside another's for it to be a part of it (the demo scene: parts of one object 0.77-0.96 inside it, different objects 0.0)
GRANULARITIES = ("whole", "part")


@dataclass
class Instance:
    id: int
    proposals: list[tuple[str, int]]          # (view name, per-view SAM id)
    gaussians: int = 0
    views: list[str] = field(default_factory=list)
    bbox: Optional[list[list[float]]] = None  # [[xmin, ymin, zmin], [xmax, ymax, zmax]]

    def to_json(self) -> dict:
        return {"id": self.id, "gaussians": self.gaussians, "views_seen": len(self.views), "views": self.views,
                "bbox": self.bbox, "sam_ids": [{"view": v, "id": k} for v, k in self.proposals]}


@dataclass
class EverythingResult:
    labels: np.ndarray                 # [N] int64: -1 undecided, 0 background, i >= 1 instance i
    votes: np.ndarray                  # [N, I+1] float64: column 0 total α·T mass over the views, i: the mass
                                       # inside instance i's proposals (per view the best of them)
    instances: list[Instance]
    proposals: int                     # proposals considered
    matches: int                       # mutual matches found
    dropped_unstable: int
    merged_parts: int
    dropped_small: int
    seconds: dict = field(default_factory=dict)


def _csr(av: AtomVotes, n: int) -> sparse.csr_matrix:  # [N, M] atom masses of one view
    return sparse.csr_matrix((av.mass.astype(np.float64), (av.gid, av.atom)), shape=(n, len(av.area)))


@dataclass
class _View:
    av: AtomVotes
    A: sparse.csr_matrix            # [N, M] atom masses
    P: sparse.csc_matrix            # [N, K] mass of each Gaussian inside each proposal
    t: np.ndarray                   # [N] total mass per Gaussian in this view
    S: sparse.csc_matrix            # [N, K] supports (0/1)
    ids: list[int]                  # per-view SAM ids
    offset: int = 0                 # index of this view's first proposal in the global list


def _prepare(av: AtomVotes, n: int, ids: list[int]) -> _View:
    A = _csr(av, n)
    B = sparse.csr_matrix(av.member.astype(np.float64))
    P = (A @ B).tocsc()
    t = np.asarray(A.sum(axis=1)).ravel()
    P_coo = P.tocoo()
    keep = P_coo.data >= SUPPORT * t[P_coo.row]
    S = sparse.csc_matrix((np.ones(int(keep.sum())), (P_coo.row[keep], P_coo.col[keep])), shape=P.shape)
    return _View(av, A, P, t, S, ids)


def _iou_into(src: _View, dst: _View) -> np.ndarray:  # -> [K_dst, K_src] soft IoU of rendered supports
    """Each of src's supports rendered into dst (per atom), against each of dst's proposals."""
    R = (dst.A.T @ src.S).toarray()                     # [M_dst, K_src] rendered support mass per atom
    member = dst.av.member.astype(np.float64)           # [M_dst, K_dst]
    inter = member.T @ R                                # [K_dst, K_src]
    area = member.T @ dst.av.area.astype(np.float64)    # [K_dst]
    shown = R.sum(axis=0)                               # [K_src]
    iou = inter / (area[:, None] + shown[None, :] - inter + 1e-9)
    visible = shown >= VISIBLE_FRACTION * dst.av.area.sum()
    return np.where(visible[None, :], iou, 0.0)


def find_instances(gaussians: Any, atom_views: list[AtomVotes], cameras: dict[str, Any],
                   proposal_ids: dict[str, list[int]], min_gaussians: int = 100, granularity: str = "whole",
                   log: Callable[[str], None] = lambda s: None) -> EverythingResult:
    """Rules 1-6 of the module docstring. atom_views must carry ``member`` (SAM proposals)."""
    t0 = time.perf_counter()
    n = int(gaussians.get_xyz.shape[0])
    views = []
    total = 0
    for av in atom_views:
        if av.member is None or av.member.shape[1] == 0:
            continue
        v = _prepare(av, n, proposal_ids[av.name])
        v.offset = total
        total += av.member.shape[1]
        views.append(v)
    t_prep = time.perf_counter() - t0

    # 2. mutual matches between neighbouring views (each pair once)
    fwd = np.stack([np.asarray(cameras[v.av.name].world_to_camera, dtype=np.float64)[2, :3] for v in views])
    pairs = set()
    for i in range(len(views)):
        near = [j for j in np.argsort(-(fwd @ fwd[i])) if j != i][:NEIGHBOURS]
        pairs.update((min(i, j), max(i, j)) for j in near)
    rows, cols = [], []
    for i, j in sorted(pairs):
        v, u = views[i], views[j]
        both = (_iou_into(v, u) >= MATCH_IOU) & (_iou_into(u, v).T >= MATCH_IOU)  # [K_u, K_v]
        a, b = np.nonzero(both)
        rows += list(v.offset + b)
        cols += list(u.offset + a)
    graph = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(total, total))
    ncomp, comp = connected_components(graph, directed=False)
    t_match = time.perf_counter() - t0 - t_prep

    # 3. instances: components proposed in >= MIN_VIEWS views
    owner = np.empty(total, dtype=np.int64)
    for v in views:
        owner[v.offset:v.offset + v.S.shape[1]] = views.index(v)
    groups = []
    for c in range(ncomp):
        members = np.flatnonzero(comp == c)
        if len(set(owner[members].tolist())) >= MIN_VIEWS:
            groups.append(members)
    unstable = ncomp - len(groups)

    # 4. votes per group: sum over its proposals of (inside - outside) and of the mass involved
    def group_votes(members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vin = np.zeros(n)
        seen = np.zeros(n)
        by_view: dict[int, list[int]] = {}
        for m in members:
            by_view.setdefault(int(owner[m]), []).append(int(m - views[owner[m]].offset))
        for vi, ks in by_view.items():
            v = views[vi]
            inside = np.asarray(v.P[:, ks].max(axis=1).todense()).ravel()  # a view votes once per instance
            vin += inside
            seen += v.t
        return vin, seen

    def candidates(members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vin, seen = group_votes(members)
        score = np.where(seen > 0, (2 * vin - seen) / np.maximum(seen, 1e-30), -1.0)
        return score, vin

    scores = [candidates(m) for m in groups]

    # 5. nesting: smallest first, a group mostly inside a larger one is its part
    merged = 0
    parent: dict[int, int] = {}
    order = sorted(range(len(groups)), key=lambda g: int((scores[g][0] > 0).sum()))
    alive = set(range(len(groups)))
    for a in order:
        ca = scores[a][0] > 0
        if not ca.any():
            continue
        hosts = [b for b in alive if b != a and (scores[b][0] > 0).sum() > ca.sum()
                 and ((scores[b][0] > 0) & ca).sum() >= NESTED * ca.sum()]
        if not hosts:
            continue
        b = max(hosts, key=lambda h: int(((scores[h][0] > 0) & ca).sum()))
        merged += 1
        if granularity == "whole":
            groups[b] = np.concatenate([groups[b], groups[a]])
            scores[b] = candidates(groups[b])
            alive.discard(a)
        else:
            parent[a] = b
    keep_groups = sorted(alive)

    # 6. assignment: the best normalised vote; with granularity "part" a part wins inside its whole
    any_seen = np.zeros(n, dtype=bool)
    for v in views:
        any_seen |= v.t > 0
    labels = np.where(any_seen, 0, -1).astype(np.int64)
    votes = np.zeros((n, len(groups) + 1))
    if keep_groups:
        S = np.full((n, len(groups)), -np.inf)
        for g in keep_groups:
            S[:, g] = scores[g][0]
            votes[:, g + 1] = scores[g][1]
        if granularity == "part":
            for a, b in parent.items():  # inside both, the part
                S[:, b] = np.where(S[:, a] > 0, -np.inf, S[:, b])
        best = S.argmax(axis=1)
        ok = S[np.arange(n), best] > 0
        labels[ok] = best[ok] + 1
    sizes = np.bincount(labels[labels > 0], minlength=len(groups) + 1)
    small = [g + 1 for g in keep_groups if sizes[g + 1] < min_gaussians]
    for i in small:
        labels[labels == i] = 0
    keep = [g + 1 for g in keep_groups if g + 1 not in small]
    order = sorted(keep, key=lambda i: -sizes[i])
    remap = np.zeros(len(groups) + 1, dtype=np.int64)
    remap[0] = 0
    for new, old in enumerate(order, start=1):
        remap[old] = new
    pos = labels > 0
    labels[pos] = remap[labels[pos]]
    votes = np.concatenate([votes[:, :1], votes[:, order]], axis=1) if order else votes[:, :1]
    votes[:, 0] = sum(v.t for v in views)

    xyz = gaussians.get_xyz.detach().cpu().numpy()
    instances = []
    for new, old in enumerate(order, start=1):
        members = groups[old - 1]
        props = sorted({(views[owner[m]].av.name, int(views[owner[m]].ids[m - views[owner[m]].offset]))
                        for m in members})
        sel = labels == new
        pts = xyz[sel]
        instances.append(Instance(new, props, int(sel.sum()), sorted({p[0] for p in props}),
                                  [pts.min(0).tolist(), pts.max(0).tolist()] if len(pts) else None))
    t_total = time.perf_counter() - t0
    log(f"{total} proposals in {len(views)} views, {len(rows)} mutual matches, {ncomp} groups: "
        f"{len(instances)} instances ({unstable} groups in < {MIN_VIEWS} views dropped, {merged} parts merged"
        f"{' into whole objects' if granularity == 'whole' else ' kept apart'}, {len(small)} below "
        f"{min_gaussians} Gaussians dropped)")
    return EverythingResult(labels, votes, instances, total, len(rows), unstable, merged, len(small),
                            {"prepare": round(t_prep, 4), "match": round(t_match, 4), "total": round(t_total, 4)})
