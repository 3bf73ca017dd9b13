"""Data: tfds/ArrayRecord and synthetic sources, grain pipelines, augmentations, dataset preparation."""
