"""timm's image models under the protocol, by timm name: stages from the model's feature_info,
one cut ("features": forward_features laid out as a map). Tested: resnet50, convnext_tiny,
efficientnet_lite0, vit_base_patch16_224; other timm CNNs and ViTs with feature_info may work.

    python -c "from flowercam.backbones import timm_models as t; print(t.load('resnet50',
        seed=0).shapes(64))"

A ViT (timm's vision_transformer) is built with dynamic_img_size, so it takes any input size: its
class and register tokens are dropped and its patch tokens laid out as the grid the model's own
patch embedding gives for the input (224 px at patch 16: 14x14); nobody passes a grid size.
"""

from functools import partial

import timm
import torch
from torch import nn

from flowercam.backbones import protocol
from flowercam.core import UserError, file_sha256

CUT = "features"  # forward_features' output (CNN: the last stage's map; ViT: normed patch tokens)
TESTED = ("resnet50", "convnext_tiny", "efficientnet_lite0", "vit_base_patch16_224")
TOKEN_INIT_STD = 0.02  # timm's init of class tokens / position embeddings (no reset_parameters)


def is_vit(name) -> bool:
    return timm.models.is_model_in_modules(name, ["vision_transformer"])


def create(name, pretrained=False) -> nn.Module:
    """timm.create_model(name) without its classifier (num_classes=0); a ViT takes any size."""
    if not timm.is_model(name):
        raise UserError(f"unknown backbone {name!r}: not a timm model name (see timm.list_models)")
    kwargs = {"dynamic_img_size": True} if is_vit(name) else {}
    return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)


class TimmBackbone(protocol.Backbone):
    """A timm model (no classifier), frozen, in eval mode; backbone_id defaults to the hash of its
    state dict (protocol.state_dict_id)."""

    def __init__(self, model, name, backbone_id=None):
        super().__init__()
        self.model = model
        self.name = name
        cfg = model.pretrained_cfg
        self.input_size = int(cfg["input_size"][-1])
        self.mean, self.std = tuple(cfg["mean"]), tuple(cfg["std"])
        self.stages = {f["module"]: int(f["num_chs"]) for f in model.feature_info}
        self.cuts = (CUT,)
        self.default_cut = self.cut = CUT
        self.vit = hasattr(model, "num_prefix_tokens") and hasattr(model, "patch_embed")
        self.requires_grad_(False)
        self.eval()
        self.backbone_id = backbone_id or protocol.state_dict_id(name, model)

    @property
    def channels(self):
        return int(self.model.num_features)

    @property
    def min_size(self):
        """The patch size (ViT) or the network's total stride: one cell of its grid."""
        if self.vit:
            return max(self.model.patch_embed.patch_size)
        return int(self.model.feature_info[-1]["reduction"])

    def _as_map(self, out, grid):
        """A stage's output as [B,C,h,w]: a ViT's tokens [B,P+h*w,C] lose the P class/register
        tokens and are laid out row by row (timm's patch order) on the h x w grid."""
        if not self.vit:
            return out
        tokens = out[:, self.model.num_prefix_tokens:]
        return tokens.unflatten(1, grid).permute(0, 3, 1, 2)

    def _grid(self, x):
        return tuple(self.model.patch_embed.dynamic_feat_size(x.shape[-2:])) if self.vit else None

    def model_input(self, x):
        """Images normalised with the toolkit's mean/std -> with the model's own (the identity
        when they are the same, e.g. ImageNet's)."""
        if (self.mean, self.std) == (protocol.INPUT_MEAN, protocol.INPUT_STD):
            return x
        shape = (1, -1, 1, 1)
        scale = torch.tensor(protocol.INPUT_STD, dtype=x.dtype, device=x.device).view(shape)
        shift = torch.tensor(protocol.INPUT_MEAN, dtype=x.dtype, device=x.device).view(shape)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(shape)
        return (x * scale + shift - mean) / std

    def forward(self, x):
        return self._as_map(self.model.forward_features(self.model_input(x)), self._grid(x))

    def forward_with(self, x, layers, graph="stages", start=0):
        self.check_stages(layers)
        if start:
            raise ValueError(f"backbone {self.name} has no prefix start (start={start})")
        if graph not in protocol.GRAPHS:
            raise ValueError(f"unknown graph mode {graph!r}: use one of {protocol.GRAPHS}")
        order = list(self.stages)
        leaf = min(layers, key=order.index) if graph == "stages" and layers else None
        grid, acts = self._grid(x), {}

        def capture(name):
            def hook(module, inputs, out):
                if name == leaf:  # the graph starts here: nothing below records one
                    out = out.detach().requires_grad_()
                acts[name] = act = self._as_map(out, grid)
                if self.vit:  # the rest of the net reads the map, so gradients reach it
                    prefix = out[:, :self.model.num_prefix_tokens]
                    out = torch.cat([prefix, act.flatten(2).transpose(1, 2)], dim=1)
                return out
            return hook

        hooks = [self.model.get_submodule(name).register_forward_hook(capture(name))
                 for name in dict.fromkeys(layers)]
        try:
            with torch.set_grad_enabled(graph is not None):
                # frozen weights: with x detached, no graph is recorded below the leaf stage
                feats = self.forward(x.detach() if graph == "stages" else x)
        finally:
            for h in hooks:
                h.remove()
        return feats, {name: acts[name] for name in layers}

    def forward_replacing(self, x, stage, act):
        """One forward of the images x with the stage's output replaced by act: the layers
        below it run again (a timm model has no generic split); a ViT keeps x's own class and
        register tokens beside act's patch tokens."""
        self.check_stages([stage])

        def replace(module, inputs, out):
            if not self.vit:
                return act.to(out.dtype)
            prefix = out[:, :self.model.num_prefix_tokens]
            return torch.cat([prefix, act.flatten(2).transpose(1, 2).to(out.dtype)], dim=1)

        hook = self.model.get_submodule(stage).register_forward_hook(replace)
        try:
            return self.forward(x)
        finally:
            hook.remove()

    def cascade(self):
        """Every module with parameters of its own, in the model's order, goes to the first stage
        whose output comes at or after it (the stem to the first stage; what follows the last
        stage, e.g. EfficientNet's conv_head or a ViT's final norm, to the last); top first."""
        order = list(self.stages)
        blocks, pending = {name: [] for name in order}, []
        for mname, module in self.model.named_modules():
            if any(True for _ in module.parameters(recurse=False)):
                pending.append(module)
            inside = [s for s in order if mname == s or mname.startswith(s + ".")]
            if inside:
                blocks[inside[0]] += pending
                pending = []
        blocks[order[-1]] += pending
        return tuple((name, blocks[name]) for name in reversed(order))

    def reinit(self, module):
        """reset_parameters (PyTorch's init of convs, linears, norms); a module without it (a ViT's
        tokens and position embedding, layer-scale gammas) gets its own parameters drawn from
        N(0, 0.02^2) truncated at 2 std, timm's init of tokens."""
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
            return
        for param in module.parameters(recurse=False):
            nn.init.trunc_normal_(param, std=TOKEN_INIT_STD)


def classifier_keys(model, sd):
    """Keys of sd in the model's ImageNet classifier (pretrained_cfg's 'classifier' prefix)."""
    prefix = model.pretrained_cfg.get("classifier") or "classifier"
    return [k for k in sd if k.startswith(prefix + ".")]


def load_state_dict(model, sd, name, path):
    """sd (a full timm state dict; the classifier is ignored) into model, strictly: a wrong file
    is one UserError line."""
    sd = {k: v for k, v in sd.items() if k not in set(classifier_keys(model, sd))}
    try:
        model.load_state_dict(sd)
    except RuntimeError as err:  # missing / unexpected keys or wrong shapes
        why = " ".join(str(err).split())[:120]
        raise UserError(f"backbone weights {path} do not match timm's {name} ({why}): pass a "
                        f"{name} state dict") from None


def load(name, weights=None, device="cpu") -> TimmBackbone:
    """weights: a state dict file of timm's `name`; None = timm's own download (offline: one
    UserError line)."""
    if weights:
        model = create(name)
        load_state_dict(model, protocol.read_state_dict(weights, name), name, weights)
        backbone = TimmBackbone(model, name)
        backbone.weights_sha256 = file_sha256(weights)
        return backbone.to(device)
    else:
        try:
            model = create(name, pretrained=True)
        except UserError:
            raise
        except Exception as err:
            raise UserError(f"cannot download {name} weights through timm "
                            f"({type(err).__name__}): offline? pass --backbone-weights FILE "
                            f"(a {name} state dict)") from None
    return TimmBackbone(model, name).to(device)


def random(name, seed=0, device="cpu") -> TimmBackbone:
    """timm's `name` with its own random init, seeded (tests)."""
    with protocol.seeded(seed):
        model = create(name)
    return TimmBackbone(model, name).to(device)


def entry(name) -> protocol.Entry:
    return protocol.Entry(partial(load, name), partial(random, name))
