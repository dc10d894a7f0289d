"""Model definitions: building blocks, image/text encoders, CLIP wrapper, captioner, config registry."""
