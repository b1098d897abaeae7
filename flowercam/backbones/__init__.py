"""Backbones behind one protocol (protocol.Backbone): VGG16 as the report has it, timm's CNNs and
ViTs, EfficientNet-Lite0 from a local wheel; registry.load_backbone(name) picks one. See
docs/backbones.md. Not wired yet: the consumers still use flowercam.model.vgg directly."""
