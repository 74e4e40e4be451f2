"""absl-flag experiments reproducing the Coherent Gradients papers."""
