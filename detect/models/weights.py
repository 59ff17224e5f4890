"""Which weight files a composed config needs, and fetching them into the caches the builders read:
torch.hub's (`$TORCH_HOME/hub/checkpoints/`) for torchvision weights, the Hugging Face hub's for timm
backbones and the transformers detectors' `model.pretrained`.
`python -m detect.fetch_weights` runs this on a machine with internet (a cluster's login node) so
that training nodes without internet find every file in the cache.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig

from detect.models.pretrained import is_torchvision_weights


@dataclass(frozen=True)
class WeightFile:
    key: str  # the config key that names it
    kind: str  # "torchvision", "timm" or "hf" (a transformers detector's hub id)
    name: str  # the weights name, the timm model name or the hub id


def weights_needed(cfg: DictConfig) -> list[WeightFile]:
    """The downloadable weights the config names: backbone weights (torchvision names, timm with
    pretrained: true), a transformers detector's hub id (model.pretrained) and a torchvision COCO start in
    runtime.load_from. Local files and folders are not listed."""
    needed = []
    pretrained = cfg.model.get("pretrained")
    if str(cfg.model.get("_target_", "")).endswith("build_hf_detector") and pretrained \
            and not Path(str(pretrained)).expanduser().exists():
        needed.append(WeightFile("model.pretrained", "hf", str(pretrained)))
    backbone = cfg.model.get("backbone") or {}
    target = str(backbone.get("_target_", ""))
    if target.endswith("TimmBackbone") and backbone.get("pretrained"):
        needed.append(WeightFile("model.backbone.name", "timm", str(backbone.name)))
    elif is_torchvision_weights(str(backbone.get("weights"))):
        needed.append(WeightFile("model.backbone.weights", "torchvision", str(backbone.weights)))
    load_from = cfg.runtime.get("load_from")
    if is_torchvision_weights(str(load_from)):
        needed.append(WeightFile("runtime.load_from", "torchvision", str(load_from)))
    return needed


def fetch(weight: WeightFile) -> Path | str:
    """Download one file into its cache (nothing when it is there); returns where it lies.
    WeightsUnavailableError (one message naming the URL or hub id) when it cannot."""
    if weight.kind == "torchvision":
        import torch
        import torchvision

        from detect.models.pretrained import torchvision_state_dict

        torchvision_state_dict(weight.name)
        url = torchvision.models.get_weight(weight.name).url
        return Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if weight.kind == "hf":
        from detect.models.hf_detr import download_hf_detector

        return download_hf_detector(weight.name)
    from detect.models.feature_backbones import TimmBackbone

    TimmBackbone(weight.name, pretrained=True)  # timm downloads into the HF cache
    from huggingface_hub.constants import HF_HUB_CACHE

    return f"{HF_HUB_CACHE} (timm/{weight.name})"
