"""Every native op checks its inputs (shape, dtype, device, contiguity, consistent N, index ranges) before it
reads a pointer: a wrong input is a ValueError naming the op and the argument, never an out-of-bounds read."""
from __future__ import annotations

import pytest
import torch

from gaussian_renderer.cpu import _ops

N, W, H = 50, 40, 24
T = ((W + 15) // 16) * ((H + 15) // 16)


def good() -> dict:
    """Valid inputs of every op for N Gaussians and a W x H image (a real bin, forward and backward)."""
    g = torch.Generator().manual_seed(0)
    ops = _ops()
    means = torch.cat([(torch.rand(N, 2, generator=g) - 0.5), 2 + torch.rand(N, 1, generator=g)], 1)
    quats, scales = torch.randn(N, 4, generator=g), 0.05 + 0.1 * torch.rand(N, 3, generator=g)
    view = [1.0, 0, 0, 0, 0, 1.0, 0, 0, 0, 0, 1.0, 0]
    intr = [30.0, 30.0, W / 2, H / 2, 1.0, 1.0, 1.0, 1.0]
    m2, con, dep, rad = ops.project_forward(means, quats, scales, view, intr, 0.2, W, H, False, 1)
    op = 0.2 + 0.7 * torch.rand(N, generator=g)
    off, gids, _ = ops.bin(m2, con, op, rad, dep, W, H, True, None, 1)
    colors = torch.rand(N, 4, generator=g)
    _, t_final, last = ops.forward(m2, con, op, colors, off, gids, W, H, 1)
    return dict(means=means, quats=quats, scales=scales, view=view, intr=intr, m2=m2, con=con, dep=dep, rad=rad,
                op=op, off=off, gids=gids, colors=colors, t_final=t_final, last=last,
                d_out=torch.randn(3, H, W, generator=g), d_t=torch.zeros(H, W),
                weights=torch.rand(H, W, 2, generator=g), labels=torch.randint(0, 3, (H, W), dtype=torch.int32),
                dc=torch.rand(N, 1, 3, generator=g), rest=torch.rand(N, 15, 3, generator=g),
                members=torch.rand(2, N, generator=g) < 0.5)


CALLS = {
    "project_forward": lambda a: _ops().project_forward(a["means"], a["quats"], a["scales"], a["view"], a["intr"],
                                                       0.2, W, H, True, 1),
    "project_backward": lambda a: _ops().project_backward(a["means"], a["quats"], a["scales"], a["view"], a["intr"],
                                                         0.2, a["m2"], a["con"], a["dep"], 1),
    "sh_forward": lambda a: _ops().sh_forward(a["means"], a["dc"], a["rest"], [0.0, 0.0, 0.0], 3, 1),
    "sh_backward": lambda a: _ops().sh_backward(a["means"], a["dc"], a["rest"], [0.0, 0.0, 0.0], 3,
                                               torch.ones(N, 3), 1),
    "bin": lambda a: _ops().bin(a["m2"], a["con"], a["op"], a["rad"], a["dep"], W, H, True, None, 1),
    "forward": lambda a: _ops().forward(a["m2"], a["con"], a["op"], a["colors"], a["off"], a["gids"], W, H, 1),
    "forward_subsets": lambda a: _ops().forward_subsets(a["m2"], a["con"], a["op"], a["colors"], a["off"], a["gids"],
                                                        a["members"], W, H, 1),
    "backward": lambda a: _ops().backward(a["m2"], a["con"], a["op"], a["colors"], a["off"], a["gids"],
                                         a["t_final"], a["last"], a["d_out"], a["d_t"], 1),
    "vote": lambda a: _ops().vote(a["m2"], a["con"], a["op"], a["off"], a["gids"], a["weights"], 1),
    "vote_labels": lambda a: _ops().vote_labels(a["m2"], a["con"], a["op"], a["off"], a["gids"], a["labels"], 2, 1),
    "vote_labels_sparse": lambda a: _ops().vote_labels_sparse(a["m2"], a["con"], a["op"], a["off"], a["gids"],
                                                             a["labels"], 2, 1),
    "contribution": lambda a: _ops().contribution(a["m2"], a["con"], a["op"], a["off"], a["gids"], W, H, 1),
}

# (op, argument to break, replacement, expected message fragment)
BROKEN = [
    ("project_forward", "scales", lambda a: a["scales"][:10], r"scales must have shape \[50, 3\]"),
    ("project_forward", "quats", lambda a: a["quats"].double(), "quats must be Float"),
    ("project_backward", "dep", lambda a: a["dep"][:-1], r"d_depths must have shape \[50\]"),
    ("sh_forward", "rest", lambda a: a["rest"][:, :, :2], r"rest must have shape \[50, \*, 3\]"),
    ("sh_backward", "dc", lambda a: a["dc"].reshape(N, 3, 1), r"dc must have shape \[50, 1, 3\]"),
    ("bin", "rad", lambda a: a["rad"].long(), "radii must be Int"),
    ("bin", "op", lambda a: a["op"][:7], r"opacities must have shape \[50\]"),
    ("forward", "colors", lambda a: a["colors"].t(), "colors must have shape|contiguous"),
    ("forward", "gids", lambda a: a["gids"] + N, r"Gaussian id\(s\) outside \[0, N = 50\)"),
    ("forward", "off", lambda a: a["off"][:-1], "tile_offsets must have shape"),
    ("forward_subsets", "members", lambda a: a["members"][:, :-1].contiguous(), r"members must have shape \[\*, 50\]"),
    ("forward_subsets", "members", lambda a: a["members"].float(), "members must be Bool"),
    ("forward_subsets", "gids", lambda a: a["gids"] + N, r"Gaussian id\(s\) outside \[0, N = 50\)"),
    ("backward", "last", lambda a: a["last"][:, :-1].contiguous(), r"last must have shape \[24, 40\]"),
    ("backward", "d_out", lambda a: torch.randn(5, H, W), "d_out has 5 channels, more than the 4"),
    ("vote", "op", lambda a: a["op"][:10], r"opacities must have shape \[50\]"),  # was an out-of-bounds read
    ("vote", "off", lambda a: torch.flip(a["off"], [0]).contiguous(), "tile_offsets must rise from 0"),
    ("vote", "weights", lambda a: a["weights"][:, :, 0], r"weights must have shape \[\*, \*, \*\]"),
    ("vote_labels", "labels", lambda a: a["labels"] + 5, r"label\(s\) outside 0..num_labels = 2"),
    ("vote_labels", "con", lambda a: a["con"][:, :2].contiguous(), r"conics must have shape \[50, 3\]"),
    ("vote_labels_sparse", "labels", lambda a: a["labels"].long(), "labels must be Int"),
    ("vote_labels_sparse", "m2", lambda a: a["m2"].to("meta"), "must be a CPU tensor"),
    ("contribution", "off", lambda a: a["off"][::2].contiguous(), "tile_offsets must have shape"),
    ("contribution", "gids", lambda a: a["gids"] - 1, r"Gaussian id\(s\) outside"),
]


@pytest.mark.parametrize("op,arg,breaker,match", BROKEN, ids=[f"{b[0]}-{b[1]}" for b in BROKEN])
def test_wrong_input_is_a_clear_error(op: str, arg: str, breaker, match: str) -> None:
    args = good()
    CALLS[op](args)  # the unbroken call works
    args[arg] = breaker(args)
    with pytest.raises(ValueError, match=match) as info:
        CALLS[op](args)
    assert op in str(info.value) or (op.startswith("sh") and "sh" in str(info.value))


def test_every_op_has_a_wrong_input_case() -> None:
    assert {b[0] for b in BROKEN} == set(CALLS)


def test_thread_count_and_image_size_are_checked() -> None:
    a = good()
    with pytest.raises(ValueError, match="num_threads must be >= 0"):
        _ops().vote(a["m2"], a["con"], a["op"], a["off"], a["gids"], a["weights"], -1)
    with pytest.raises(ValueError, match="width and height must lie in"):
        _ops().bin(a["m2"], a["con"], a["op"], a["rad"], a["dep"], 0, H, True, None, 1)
    with pytest.raises(ValueError, match="tile_mask must have shape"):
        _ops().bin(a["m2"], a["con"], a["op"], a["rad"], a["dep"], W, H, True, torch.ones(T + 1, dtype=torch.bool), 1)
