"""2D masks for segmentation: read the formats found in the wild, match them to views, stream them.

Formats (``fmt``; ``"auto"`` detects them from the path, see :func:`open_mask_source`):

- ``binary``: one image per view, PNG or JPEG; a pixel is inside when any colour channel is > 127
  (16-bit: > 32767); RGBA/LA cut-outs whose colour channels hold one colour use the alpha channel.
  One label. JPEGs are always read this way (lossy files cannot hold exact ids).
- ``ids``: one integer PNG per view (8/16-bit grey, palette indices, or colour-coded RGB), 0 = background,
  every other value one label. ``auto`` picks ``ids`` over ``binary`` when the first non-empty PNG has
  more than two distinct values or a value other than 0/255; either way a 0/255 folder gives one label.
- ``coco``: a COCO JSON file with RLE segmentations; labels are ``category_id`` (or the annotation ``id``).
- ``sam``: SAM automatic-mask-generator output, ``<path>/<image_stem>/<k>.png`` (+ ``metadata.csv``, used
  for scores when present) or ``<image_stem>.json`` RLE lists. ``k`` is numbered per image, so these are
  per-view **proposals** (:class:`ProposalMasks`), not labels: the segmentation job associates them
  through the 3D model from a prompt.
- ``sam-tracked``: the same folder layout when the ids WERE made consistent across views (SAM2's video
  predictor, a tracker): every picked ``k`` is one label.
- a single mask image: one view's mask (binary or ids), matched to its view by name like a folder's.

Label maps are int32 [H, W] with 0 = background and l = ``label_names[l - 1]``. Where picked SAM/COCO
masks overlap, a pixel takes the label listed first. Masks are matched to views by image stem:
case-insensitive, any image extension, and an optional ``_mask``/``-mask``/``.mask`` suffix. Files are
listed when a source is opened (PNG folders also read their first non-empty mask, to tell binary from
ids); each mask is read when iteration reaches its view. A file that looks like a photograph (many
mid-tone values changing from pixel to pixel) is refused with a one-line error.
"""
from utils.masks.files import (IMAGE_EXTS, LOSSY_EXTS, is_image_file, looks_like_photo, open_image,
                               photo_statistics, read_binary_mask, read_label_png, read_mask_bits, resize_nearest)
from utils.masks.matching import MASK_SUFFIXES, Label, match_key, parse_labels
from utils.masks.rle import rle_counts_to_string, rle_decode, rle_encode, rle_string_to_counts
from utils.masks.sources import (FORMATS, FULL_COVERAGE, BinaryMasks, CocoMasks, CoverageStats, IdMasks,
                                 LabelMasks, MaskSource, ProposalMasks, SamProposals, SamTrackedMasks,
                                 ViewProposals, open_mask_source, open_masks)
from utils.masks.weights import binary_weights, label_weights, onehot_weights, votes_to_labels

MaskSet = LabelMasks  # the name used before the per-format classes

__all__ = [
    "FORMATS", "FULL_COVERAGE", "IMAGE_EXTS", "LOSSY_EXTS", "MASK_SUFFIXES", "BinaryMasks", "CocoMasks",
    "CoverageStats", "IdMasks", "Label", "LabelMasks", "MaskSet", "MaskSource", "ProposalMasks", "SamProposals",
    "SamTrackedMasks", "ViewProposals", "binary_weights", "is_image_file", "label_weights", "looks_like_photo",
    "match_key", "onehot_weights", "open_image", "open_mask_source", "open_masks", "parse_labels",
    "photo_statistics", "read_binary_mask", "read_label_png", "read_mask_bits", "resize_nearest",
    "rle_counts_to_string", "rle_decode", "rle_encode", "rle_string_to_counts", "votes_to_labels",
]
