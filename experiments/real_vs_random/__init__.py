"""Real versus random labels: m-coherence of per-example gradients over training."""
