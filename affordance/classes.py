"""The class list: label value l of every label map, labels.npy and PLY file name is ``names[l]``.

Index 0 is the background ("no affordance"). The default is the UMD part-affordance data set's numbering
(Myers et al. 2015, ``gt_label`` in its ``*_label.mat`` files): 0 background, 1 grasp, 2 cut, 3 scoop,
4 contain, 5 pound, 6 support, 7 wrap-grasp.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from utils.errors import UserError

UMD_CLASSES = ("background", "grasp", "cut", "scoop", "contain", "pound", "support", "wrap-grasp")
# labelme's conventional background label; always class 0 whatever class 0 is called
LABELME_BACKGROUND = "_background_"


def class_key(name: str) -> str:
    """Spelling-insensitive key: ``Wrap-Grasp``, ``wrap_grasp`` and ``wrap grasp`` are one class."""
    return re.sub(r"[^0-9a-z]+", "", str(name).lower())


@dataclass(frozen=True)
class ClassList:
    """Ordered class names (index = label value) with a spelling-insensitive lookup."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        keys = [class_key(n) for n in self.names]
        if len(self.names) < 2:
            raise UserError(f"--classes {','.join(self.names)}: needs at least 2 names (background first, then "
                            "the affordances), e.g. background,grasp,cut")
        if any(not k for k in keys):
            raise UserError(f"--classes {','.join(self.names)}: empty class name; use letters or digits")
        dup = next((n for n, k in zip(self.names, keys) if keys.count(k) > 1), None)
        if dup is not None:
            raise UserError(f"--classes: {dup!r} is listed twice (names are compared ignoring case, spaces, '-' "
                            "and '_'); give each class once")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def num_labels(self) -> int:
        """Affordance classes (every class but the background)."""
        return len(self.names) - 1

    def index(self, name: str) -> Optional[int]:
        """Label value of ``name`` or None when unknown; labelme's ``_background_`` is 0."""
        if str(name).strip() == LABELME_BACKGROUND:
            return 0
        key = class_key(name)
        for i, n in enumerate(self.names):
            if class_key(n) == key:
                return i
        return None

    def to_json(self) -> list[str]:
        return list(self.names)


def parse_classes(text: Optional[str | Sequence[str]]) -> ClassList:
    """``--classes``: None -> UMD classes; a file (one name per line, ``#`` comments) or ``a,b,c``.

    The first name is class 0, the background.
    """
    if text is None or (isinstance(text, str) and not text.strip()):
        return ClassList(UMD_CLASSES)
    if not isinstance(text, str):
        return ClassList(tuple(str(n).strip() for n in text))
    path = Path(text)
    if "," not in text and path.suffix.lower() in (".txt", ".names", ".csv", ".lst") and not path.is_file():
        raise UserError(f"{path}: class list file not found; pass an existing file (one name per line) or a "
                        "comma list such as background,grasp,cut")
    if path.is_file():
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path}: cannot read the class list ({e}); pass a UTF-8 text file") from None
        names = []
        for line in lines:
            line = line.split("#", 1)[0].strip()
            if line:
                names.extend(p.strip() for p in line.split(",") if p.strip())
        if not names:
            raise UserError(f"{path}: holds no class name; write one name per line, background first")
        return ClassList(tuple(names))
    return ClassList(tuple(p.strip() for p in text.split(",")))
