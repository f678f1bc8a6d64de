"""Segment your own LGE (or bSSFP) volumes with a trained DRU-Net, one command (`cmr-predict`).

    cmr-predict -i scans/ -o labels/                      # the shipped model (models/README.md)
    cmr-predict -i patient6_LGE.nii.gz -o labels/ -m real/mscmrseg2019/checkpoints/settings/<run>
    cmr-predict -i scans/ -o labels/ -m final.pt --largest-component --device cuda

IN is a NIfTI file or a folder of them. In a folder, files named as MS-CMRSeg or MyoPS name them are taken
for the chosen sequence only (LGE by default; their label files never), and any other *.nii / *.nii.gz is
taken as it is. Each prediction is written to OUT under the input's file name, on the input's grid with its
affine and header, in the challenge's label values (200 MYO, 500 LV, 600 RV). A checkpoint carries the crop,
spacing and normalisation its network was trained with, so inference prepares each volume the same way.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from cmr_lib.core.config import InferencePolicy
from cmr_lib.core.errors import CmrError, cli_main
from cmr_lib.core.paths import repo_root
from cmr_lib.core.records import RunRecord
from cmr_lib.core.schema import with_record_defaults
from cmr_lib.data.nifti import Volume, case_name, read_image, write_label
from cmr_lib.data.sources import canonical_sequence
from cmr_lib.evaluation.inference import predict
from cmr_lib.evaluation.postprocess import postprocessed
from cmr_lib.models.drunet import DRUNet
from cmr_lib.training.checkpoints import load_checkpoint, load_weights
from cmr_lib.training.segmenters import run_checkpoint

MODELS = repo_root() / "models"
DEFAULT_MODEL = "drunet-lge"
NIFTI = (".nii", ".nii.gz")


def is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI)


def find_inputs(src, sequence: str = "LGE") -> list[Path]:
    """The volumes to segment in `src` (a NIfTI file, or a folder: see the module docstring), sorted by name."""
    src = Path(src)
    if src.is_file():
        if not is_nifti(src):
            raise CmrError(f"{src}: not a NIfTI file (.nii or .nii.gz)")
        return [src]
    if not src.is_dir():
        raise CmrError(f"{src}: no such file or folder")
    found = []
    for f in sorted(p for p in src.iterdir() if p.is_file() and is_nifti(p)):
        case = case_name(f.name)
        if case is None or (not case[3] and sequence in ("any", canonical_sequence(case[2]))):
            found.append(f)
    if not found:
        raise CmrError(f"{src}: no {'' if sequence == 'any' else sequence + ' '}NIfTI volume to segment "
                       f"(.nii or .nii.gz; MS-CMRSeg and MyoPS names are taken by sequence, --sequence any takes all)")
    return found


def shipped_models() -> list[str]:
    """The names of the models committed under models/ (each a folder with model.pt)."""
    return sorted(p.parent.name for p in MODELS.glob("*/model.pt"))


def resolve_model(spec: str | None) -> Path:
    """The checkpoint file MODEL names: a checkpoint file, a run's checkpoint folder (final.pt), a results run folder
    (its run.json names the checkpoint folder), or a shipped model's name (models/<name>/model.pt)."""
    spec = spec or DEFAULT_MODEL
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        for name in ("final.pt", "model.pt"):
            if (path / name).is_file():
                return path / name
        if (path / "run.json").is_file():
            return run_checkpoint(RunRecord.read(path / "run.json"))
        raise CmrError(f"{path}: a folder without final.pt, model.pt or run.json: not a trained model")
    if (MODELS / spec / "model.pt").is_file():
        return MODELS / spec / "model.pt"
    names = ", ".join(shipped_models()) or "none"
    raise CmrError(f"model {spec!r}: no such file, folder or shipped model (shipped: {names})")


def load_model(path, dev: torch.device) -> tuple[DRUNet, dict]:
    """A trained DRU-Net and the configuration it was trained with (crop, preprocess, segmenter), loaded with
    weights_only=True."""
    state = load_checkpoint(path)
    config = state["config"]
    if not {"crop", "preprocess", "segmenter"} <= set(config) or "depth" not in config["segmenter"]:
        raise CmrError(f"{path}: not a DRU-Net checkpoint (its configuration has no crop, preprocess and segmenter)")
    config = {**config, **with_record_defaults({"preprocess": config["preprocess"]})}     # older checkpoints' keys
    sg = config["segmenter"]
    model = DRUNet(depth=sg["depth"], root=sg["root"], head_relu=sg["head_relu"])
    load_weights(model, state, path)
    return model.to(dev).eval(), config


def volume_of(path: Path) -> Volume:
    """An unlabelled volume read from one NIfTI file (its header's voxel size, its affine)."""
    image, spacing, affine = read_image(path)
    return Volume(image=image, label=None, spacing=spacing, affine=affine, patient=0, sequence="",
                  image_path=path, label_path=None)


def segment(model, config: dict, vol: Volume, dev: torch.device, *, largest_component: bool = False) -> np.ndarray:
    """Class labels (X, Y, Z) of one volume, prepared as the network's training data were."""
    policy = InferencePolicy(crop=int(config["crop"]), preprocess=config["preprocess"],
                             precision=config["segmenter"]["precision"])
    pred = predict(model, vol, policy, dev)
    return postprocessed(pred, "largest_component" if largest_component else "none")


def predict_files(inputs, out, model_spec=None, *, dev=None, largest_component=False, progress=True) -> list[Path]:
    """Segment each input into OUT/<its name>; refuses to write over any input. Returns the written files."""
    out = Path(out)
    targets = [out / f.name for f in inputs]
    given = {f.resolve() for f in inputs}
    clash = next((t for t in targets if t.resolve() in given), None)
    if clash is not None:
        raise CmrError(f"{clash}: the output would overwrite an input; choose another -o folder")
    if out.exists() and not out.is_dir():
        raise CmrError(f"{out}: exists and is not a folder")
    dev = dev or torch.device("cpu")
    model, config = load_model(resolve_model(model_spec), dev)
    written = []
    for f, target in tqdm(list(zip(inputs, targets)), desc="cmr-predict", unit="volume", disable=not progress):
        vol = volume_of(f)
        written.append(write_label(target, segment(model, config, vol, dev, largest_component=largest_component),
                                   like=vol))
    return written


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise CmrError("--device cuda: no CUDA GPU on this machine (use --device cpu)")
    return torch.device(name)


@cli_main
def main(argv=None) -> int:
    """cmr-predict -i IN -o OUT [-m MODEL] [--largest-component] [--device cpu|cuda]"""
    ap = argparse.ArgumentParser(prog="cmr-predict", description=__doc__.split("\n\n")[0],
                                 epilog="example: cmr-predict -i data/mscmrseg2019/LGE -o labels/ "
                                        "(then: cmr-evaluate -ref GT_FOLDER -pred labels/)",
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-i", "--input", required=True, help="a NIfTI volume or a folder of them")
    ap.add_argument("-o", "--output", required=True, help="folder for the label volumes (created if needed)")
    ap.add_argument("-m", "--model", default=None,
                    help=f"checkpoint file, run folder or shipped model name (default: {DEFAULT_MODEL})")
    ap.add_argument("--sequence", default="LGE", choices=("LGE", "C0", "T2", "any"),
                    help="which sequence to take from MS-CMRSeg / MyoPS names in a folder (default LGE)")
    ap.add_argument("--largest-component", action="store_true",
                    help="keep each structure's largest connected component (nnU-Net's post-processing)")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    inputs = find_inputs(args.input, args.sequence)
    t0 = time.perf_counter()
    written = predict_files(inputs, args.output, args.model, dev=_device(args.device),
                            largest_component=args.largest_component, progress=not args.quiet)
    seconds = time.perf_counter() - t0
    print(f"{len(written)} label volume(s) in {args.output} ({seconds / max(len(written), 1):.1f} s per volume)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
