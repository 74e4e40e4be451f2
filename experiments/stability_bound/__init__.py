"""The stability bound of 2203.10036 along a run: Σ_t η_t·sqrt(2(1−α̂_t)) vs the measured gap."""
