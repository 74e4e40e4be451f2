"""Learning order: when each example is learnt; early stopping vs the onset of memorization."""
