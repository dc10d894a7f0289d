"""Dataset reinforcement: write teacher embeddings, synthetic captions and augmentation records once."""
