"""2D -> 2D label transfer by dense feature matching.

Every annotated source pixel gives a (feature, class) pair; features are L2-normalised so that a dot product is
the cosine similarity. The pairs are subsampled to at most ``max_samples``, balanced over classes (a small
affordance such as "cut" keeps all its pixels instead of drowning in background). A target pixel takes the
majority class of its ``k`` most similar source pixels; ties go to the class with the larger summed similarity.

Search: faiss ``IndexFlatIP`` when faiss is installed (lazy import), else scikit-learn ``NearestNeighbors``
(brute force, Euclidean on unit vectors: |a - b|^2 = 2 - 2 cos, the same order as cosine). Both are exact.

All feature maps go through one :class:`features.extractors.FeatureProjection` (standardise + PCA) fitted on
pixels of the sources and of a few target views, so sources and targets live in one space.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from utils.errors import UserError

KNN_BACKENDS = ("auto", "sklearn", "faiss")
QUERY_CHUNK = 16_384  # query rows per search call (bounds the [Q, S] distance block)


# ---------------------------------------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------------------------------------
def l2_normalise(x: np.ndarray) -> np.ndarray:  # [M, C] -> [M, C] float32, zero rows stay zero
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def flatten_map(fmap: np.ndarray) -> np.ndarray:  # [C, h, w] -> [h*w, C] float32 (row-major pixels)
    c = fmap.shape[0]
    return np.ascontiguousarray(np.asarray(fmap, dtype=np.float32).reshape(c, -1).T)


def balanced_sample(labels: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:  # [S] int64
    """Indices of at most ``max_samples`` rows, as equal per class as the classes' sizes allow.

    Water-filling: every class gets ``budget / classes`` rows; classes with fewer rows give all of theirs and
    the remainder is shared among the others. Indices are returned sorted.

    labels: np.ndarray  # [M] int
    """
    labels = np.asarray(labels)
    if max_samples < 1:
        raise UserError(f"--max-samples {max_samples}: must be >= 1")
    if labels.size <= max_samples:
        return np.arange(labels.size, dtype=np.int64)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.zeros(len(classes), dtype=np.int64)
    budget = int(max_samples)
    open_ = np.ones(len(classes), dtype=bool)
    while budget > 0 and open_.any():
        share = max(1, budget // int(open_.sum()))
        for i in np.flatnonzero(open_):
            take = min(share, int(counts[i] - quota[i]), budget)
            quota[i] += take
            budget -= take
            if quota[i] >= counts[i]:
                open_[i] = False
            if budget == 0:
                break
    picked = []
    for c, q in zip(classes, quota):
        rows = np.flatnonzero(labels == c)
        picked.append(rows if q >= rows.size else rng.choice(rows, size=int(q), replace=False))
    return np.sort(np.concatenate(picked)).astype(np.int64)


# ---------------------------------------------------------------------------------------------------------
# Exact cosine k-NN
# ---------------------------------------------------------------------------------------------------------
def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_knn_backend(name: str) -> str:
    if name not in KNN_BACKENDS:
        raise UserError(f"--knn-backend {name!r}: use one of {', '.join(KNN_BACKENDS)}")
    if name == "auto":
        return "faiss" if faiss_available() else "sklearn"
    if name == "faiss" and not faiss_available():
        raise UserError("--knn-backend faiss: faiss is not installed (`pip install faiss-cpu`); or use sklearn")
    return name


class CosineIndex:
    """Exact k-nearest neighbours by cosine similarity over unit vectors [S, C]."""

    def __init__(self, vectors: np.ndarray, backend: str = "auto", num_threads: int = 0):
        self.vectors = np.ascontiguousarray(l2_normalise(vectors))
        self.backend = resolve_knn_backend(backend)
        self.num_threads = num_threads
        if self.backend == "faiss":
            import faiss

            if num_threads > 0:
                faiss.omp_set_num_threads(int(num_threads))
            self._index: Any = faiss.IndexFlatIP(self.vectors.shape[1])
            self._index.add(self.vectors)
        else:
            from sklearn.neighbors import NearestNeighbors

            self._index = NearestNeighbors(algorithm="brute", metric="euclidean",
                                           n_jobs=None if num_threads <= 0 else int(num_threads))
            self._index.fit(self.vectors)

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(cosine similarities [Q, k] descending, indices [Q, k]) of the ``k`` nearest rows.

        queries: np.ndarray  # [Q, C], normalised here
        """
        k = int(min(k, len(self)))
        q = np.ascontiguousarray(l2_normalise(queries))
        sims = np.empty((q.shape[0], k), dtype=np.float32)
        idx = np.empty((q.shape[0], k), dtype=np.int64)
        for a in range(0, q.shape[0], QUERY_CHUNK):
            block = q[a:a + QUERY_CHUNK]
            if self.backend == "faiss":
                s, i = self._index.search(block, k)
            else:
                d, i = self._index.kneighbors(block, n_neighbors=k, return_distance=True)
                s = 1.0 - 0.5 * d.astype(np.float64) ** 2
            sims[a:a + len(block)] = s
            idx[a:a + len(block)] = i
        return sims, idx


def majority_vote(neighbour_labels: np.ndarray, sims: np.ndarray, num_classes: int
                  ) -> tuple[np.ndarray, np.ndarray]:  # ([Q] int32, [Q] float32 vote share of the winner)
    """Majority class of each row's neighbours; ties broken by the larger summed cosine similarity.

    neighbour_labels: np.ndarray  # [Q, k] int in 0..num_classes-1
    sims: np.ndarray              # [Q, k] cosine similarities in [-1, 1]
    """
    q, k = neighbour_labels.shape
    rows = np.repeat(np.arange(q), k)
    counts = np.zeros((q, num_classes), dtype=np.float64)
    np.add.at(counts, (rows, neighbour_labels.ravel()), 1.0)
    simsum = np.zeros((q, num_classes), dtype=np.float64)
    np.add.at(simsum, (rows, neighbour_labels.ravel()), sims.ravel().astype(np.float64))
    # |simsum| <= count <= k, so simsum / (2k + 1) < 0.5 only reorders classes with equal counts
    score = counts + simsum / (2.0 * k + 1.0)
    best = score.argmax(axis=1)
    return best.astype(np.int32), (counts[np.arange(q), best] / k).astype(np.float32)


@dataclass
class KnnTransfer:
    """Labelled source features and the index searching them."""

    index: CosineIndex
    labels: np.ndarray       # [S] int32
    num_classes: int
    k: int

    @classmethod
    def fit(cls, features: np.ndarray, labels: np.ndarray, num_classes: int, k: int = 5,
            backend: str = "auto", num_threads: int = 0) -> "KnnTransfer":
        """features: [S, C]; labels: [S] int in 0..num_classes-1."""
        if k < 1:
            raise UserError(f"--k {k}: must be >= 1")
        features = np.asarray(features)
        labels = np.asarray(labels, dtype=np.int32)
        if features.ndim != 2 or features.shape[0] != labels.shape[0] or features.shape[0] == 0:
            raise ValueError(f"features [S, C] and labels [S] must match and be non-empty, got {features.shape} "
                             f"and {labels.shape}")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(f"labels must lie in 0..{num_classes - 1}")
        if k > features.shape[0]:
            warnings.warn(f"--k {k} exceeds the {features.shape[0]} source samples; using k={features.shape[0]}",
                          stacklevel=2)
            k = int(features.shape[0])
        return cls(CosineIndex(features, backend, num_threads), labels, int(num_classes), int(k))

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class [Q] int32, vote share [Q] float32) for query features [Q, C]."""
        sims, idx = self.index.search(features, self.k)
        return majority_vote(self.labels[idx], sims, self.num_classes)

    def predict_map(self, fmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class grid [h, w] int32, vote share [h, w] float32) for a feature map [C, h, w]."""
        _, h, w = fmap.shape
        lab, share = self.predict(flatten_map(fmap))
        return lab.reshape(h, w), share.reshape(h, w)


# ---------------------------------------------------------------------------------------------------------
# One feature space for sources and targets
# ---------------------------------------------------------------------------------------------------------
def pca_sample(raw_maps: Sequence[np.ndarray], total: int, rng: np.random.Generator) -> np.ndarray:  # [P, R]
    """Up to ``total`` pixels drawn evenly from raw maps [R, h, w] (one shared PCA for every image)."""
    per = max(16, total // max(1, len(raw_maps)))
    out = []
    for m in raw_maps:
        flat = m.reshape(m.shape[0], -1)
        pick = rng.choice(flat.shape[1], size=min(per, flat.shape[1]), replace=False)
        out.append(flat[:, pick].T)
    return np.concatenate(out).astype(np.float32)


@dataclass
class SourceSamples:
    """Projected, normalised source features with their classes, before subsampling."""

    features: np.ndarray          # [M, C] float32
    labels: np.ndarray            # [M] int32
    per_image: dict[str, int]     # source name -> pixels contributed

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels, minlength=num_classes)[:num_classes].tolist()


def collect_source_samples(maps: Sequence[tuple[str, np.ndarray, np.ndarray]], project: Optional[Any] = None
                           ) -> SourceSamples:
    """(name, raw feature map [R, h, w], class grid [h, w]) triples -> one labelled sample set."""
    feats, labs, per = [], [], {}
    for name, raw, grid in maps:
        fmap = project(raw) if project is not None else raw
        if tuple(grid.shape) != tuple(fmap.shape[1:]):
            raise ValueError(f"{name}: class grid {grid.shape} differs from feature map {fmap.shape[1:]}")
        feats.append(l2_normalise(flatten_map(fmap)))
        labs.append(np.asarray(grid, dtype=np.int32).ravel())
        per[name] = int(grid.size)
    return SourceSamples(np.concatenate(feats), np.concatenate(labs), per)
