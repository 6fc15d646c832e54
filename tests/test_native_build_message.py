"""The first native build announces itself and its time on stderr (stdout stays clean for --quiet)."""
from __future__ import annotations

from pathlib import Path


def test_first_build_prints_one_line_before_and_its_time_after(tmp_path: Path, monkeypatch, capsys) -> None:
    from torch.utils import cpp_extension

    from gaussian_renderer import native

    monkeypatch.setenv("GS_SEGMENT_CACHE", str(tmp_path / "cache"))
    order = []

    def fake_load(name: str, build_directory: str, **_: object) -> None:
        order.append(capsys.readouterr().err)   # what was printed before compiling started
        (Path(build_directory) / f"{name}.so").write_bytes(b"")

    monkeypatch.setattr(cpp_extension, "load", fake_load)
    native.build()
    captured = capsys.readouterr()
    assert order == ["building the CPU rasterizer (~30 s, once) ...\n"]
    assert captured.out == "" and captured.err.startswith("built the CPU rasterizer in ") and " s (" in captured.err
    native.build()  # cached: silent
    assert capsys.readouterr() == ("", "")
