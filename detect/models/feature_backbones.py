"""Modern backbones for the necks: any timm model (`features_only=True`) and torchvision's ConvNeXt,
Swin, RegNet and EfficientNetV2 through feature extraction. Each is a backbone as the necks read it
(detect/models/backbones.py): forward gives an ordered dict of feature maps, finest first, named
`c<log2 stride>`; `out_channels` and `strides` are measured once with a small dry run, so no table of
channels can go stale.

Freezing, with MMDetection's numbering: `frozen_stages=-1` nothing, `0` the stem (everything before the
first returned level), `k` also every layer up to the k-th returned level. `norm_eval=true` keeps
BatchNorm layers in eval mode (ConvNeXt and Swin use LayerNorm, which has no statistics to keep).
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict

import torch
from torch import nn

from detect.errors import ConfigError, WeightsUnavailableError

log = logging.getLogger("detect")

# torchvision model -> the modules whose outputs are the strides 4, 8, 16, 32 (C2-C5).
TORCHVISION_RETURN_NODES = {
    "convnext": ["features.1", "features.3", "features.5", "features.7"],
    "swin": ["features.1", "features.3", "features.5", "features.7"],  # channels last: permuted
    "regnet": ["trunk_output.block1", "trunk_output.block2", "trunk_output.block3", "trunk_output.block4"],
    "efficientnet_v2": ["features.2", "features.3", "features.5", "features.6"],
}


class FeatureBackbone(nn.Module):
    """What both kinds share: naming, measuring, freezing, norm_eval."""

    channels_last_output = False

    def _measure(self) -> None:
        """out_channels and strides from one forward of a 64x64 image (every stride divides 64)."""
        was_training = self.training
        self.eval()
        with torch.no_grad():
            feats = self._features(torch.zeros(1, 3, 64, 64))
        self.train(was_training)
        self.out_channels = [int(f.shape[1]) for f in feats]
        self.strides = [64 // int(f.shape[-1]) for f in feats]
        self.names = [f"c{int(math.log2(s))}" for s in self.strides]

    def forward(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict(zip(self.names, self._features(images)))

    def _freeze(self, body: nn.Module, level_modules: list[str], frozen_stages: int) -> None:
        """Parameters up to the end of the `frozen_stages`-th level (0: before the first) stop learning;
        parameters are registered in execution order in these networks."""
        if frozen_stages < 0:
            return
        if frozen_stages > len(level_modules):
            raise ConfigError(f"model.backbone.frozen_stages={frozen_stages}: this backbone has "
                              f"{len(level_modules)} levels (use -1 .. {len(level_modules)})")
        names = [name for name, _ in body.named_parameters()]
        if frozen_stages == 0:
            first = next((i for i, n in enumerate(names) if n.startswith(level_modules[0] + ".")), len(names))
            stop = first
        else:
            prefix = level_modules[frozen_stages - 1] + "."
            stop = max((i for i, n in enumerate(names) if n.startswith(prefix)), default=-1) + 1
        frozen = set(names[:stop])
        for name, param in body.named_parameters():
            if name in frozen:
                param.requires_grad_(False)

    def train(self, mode: bool = True) -> FeatureBackbone:
        super().train(mode)
        if mode and getattr(self, "norm_eval", False):
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self


class TimmBackbone(FeatureBackbone):
    """`timm.create_model(name, pretrained=..., features_only=True, out_indices=...)`, e.g. convnext_tiny,
    efficientnetv2_rw_s, resnet50d. `pretrained` loads timm's default tag for the name (or the one after a
    dot: `convnext_tiny.fb_in22k`) from the Hugging Face hub cache."""

    def __init__(self, name: str, pretrained: bool = True, out_indices: list[int] | None = None,
                 frozen_stages: int = -1, norm_eval: bool = False):
        super().__init__()
        try:
            import timm
        except ImportError:
            raise ConfigError("model/backbone=timm needs the timm package: pip install timm") from None
        try:
            self.body = timm.create_model(name, pretrained=pretrained, features_only=True,
                                          **({"out_indices": tuple(out_indices)} if out_indices else {}))
        except RuntimeError as err:
            if "Unknown model" not in str(err):
                raise WeightsUnavailableError(_offline_message(name, err)) from None
            import difflib

            close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=5)
            raise ConfigError(f"model.backbone.name={name} is not a timm model"
                              + (f"; close: {', '.join(close)}" if close else "") + ".") from None
        except (OSError, ValueError) as err:  # no network, no cached file, a broken download
            raise WeightsUnavailableError(_offline_message(name, err)) from None
        info = self.body.feature_info
        # Without out_indices: the levels of strides 4 to 32 (C2-C5), whatever index timm gives them.
        self.keep = ([i for i, r in enumerate(info.reduction()) if r in (4, 8, 16, 32)] if not out_indices
                     else list(range(len(info.reduction()))))
        self.norm_eval = norm_eval
        self._freeze(self.body, [info.module_name()[i] for i in self.keep], frozen_stages)
        self._measure()

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(images)
        return [feats[i] for i in self.keep]


def _offline_message(name: str, err: Exception) -> str:
    from huggingface_hub.constants import HF_HUB_CACHE

    return (f"Could not load the pretrained weights of timm model {name} ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}). They come from the Hugging Face hub "
            f"(hub id timm/{name}) into {HF_HUB_CACHE}: fetch them once on a machine with internet (or set "
            "HF_HUB_OFFLINE=1 with a filled cache), or set model.backbone.pretrained=false.")


class TorchvisionBackbone(FeatureBackbone):
    """torchvision's ConvNeXt, Swin, RegNet and EfficientNetV2 by builder name (`convnext_tiny`,
    `swin_t`, `regnet_y_800mf`, `efficientnet_v2_s`) with `weights` a weights name (e.g.
    `ConvNeXt_Tiny_Weights.IMAGENET1K_V1`), a local file, or null."""

    def __init__(self, name: str, weights: str | None = None, frozen_stages: int = -1, norm_eval: bool = False):
        super().__init__()
        import torchvision
        from torchvision.models.feature_extraction import create_feature_extractor

        family = next((f for f in TORCHVISION_RETURN_NODES if name.startswith(f)), None)
        if family is None or name not in torchvision.models.list_models(torchvision.models):
            raise ConfigError(f"model.backbone.name={name}: use a torchvision ConvNeXt, Swin, RegNet or EfficientNetV2 "
                              "builder name, e.g. convnext_tiny, swin_t, regnet_y_800mf, efficientnet_v2_s.")
        model = torchvision.models.get_model(name, weights=None)
        if weights:
            from detect.models.backbones import load_pretrained_state

            state = load_pretrained_state(weights)
            missing, _ = model.load_state_dict(state, strict=False)
            if missing:
                raise WeightsUnavailableError(f"Backbone weights {weights} do not fit {name}: {len(missing)} missing "
                                              f"keys (e.g. {missing[:3]}).")
        nodes = TORCHVISION_RETURN_NODES[family]
        self.channels_last_output = family == "swin"
        self.body = create_feature_extractor(model, return_nodes={node: str(i) for i, node in enumerate(nodes)})
        self.norm_eval = norm_eval
        self._freeze(self.body, nodes, frozen_stages)
        self._measure()

    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        feats = list(self.body(images).values())
        if self.channels_last_output:  # Swin's stages give (B, H, W, C)
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]
        return feats
