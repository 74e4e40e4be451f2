"""Coherence through grokking: m-coherence of per-example gradients on (a + b) mod p."""
