"""Data layer: image loading and transforms, augmentations, dataset readers, the procedural world."""
