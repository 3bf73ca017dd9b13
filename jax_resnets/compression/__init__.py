"""Model compression: gradual magnitude pruning and simulated post-training quantization."""
