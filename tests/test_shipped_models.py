"""The models shipped in models/: what their READMEs claim holds for the files themselves."""

from __future__ import annotations

import json

import pytest

from edgeseg.model.checkpoint import read_checkpoint
from edgeseg.data import SegmentationData, resolve_dataset
from edgeseg.evaluate.scoring import evaluate
from edgeseg.runtime import Segmenter

from conftest import ROOT

SHIPPED = {"reference": "seed", "reference-separable": "separable"}  # folder under models/ -> head


@pytest.mark.parametrize("folder", sorted(SHIPPED))
def test_shipped_checkpoint_is_what_its_folder_says(folder):
    checkpoint = read_checkpoint(ROOT / "models" / folder / "best.pt")  # weights_only
    meta, provenance = checkpoint["meta"], checkpoint["meta"]["provenance"]
    assert meta["head"] == SHIPPED[folder] and meta["input_size"] == [360, 480] and meta["num_classes"] == 11
    # picked on a drive it never trained on: CamVid's heldout split (0006R0) is outside train-heldout
    assert (provenance["train_split"], provenance["val_split"]) == ("train-heldout", "heldout")
    report = json.loads((ROOT / "models" / folder / "eval.json").read_text())
    assert report["splits"]["heldout"]["miou"] == pytest.approx(provenance["best_val_miou"], abs=5e-5)
    floats = {str(value.dtype) for value in checkpoint["model"].values() if value.dtype.is_floating_point}
    assert floats == {"torch.float16"}  # stored in fp16, as the README says


@pytest.mark.parametrize("folder", sorted(SHIPPED))
def test_shipped_checkpoint_scores_as_its_eval_json_says(folder, camvid):
    """Re-scores the first 8 held-out frames; the numbers must match eval.json's per-split run to within sampling."""
    data = SegmentationData(resolve_dataset(f"camvid:{camvid}"), "heldout")
    with Segmenter.load(ROOT / "models" / folder / "best.pt") as segmenter:
        result = evaluate(segmenter, data, limit=8)
    claimed = json.loads((ROOT / "models" / folder / "eval.json").read_text())["splits"]["heldout"]
    assert result.metrics.pixel_accuracy == pytest.approx(claimed["pixel_accuracy"], abs=0.08)
    assert result.metrics.pixel_accuracy > 0.6  # an untrained model scores about 0.1
