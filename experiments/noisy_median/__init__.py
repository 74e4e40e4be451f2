"""Median-of-3 family at 50 % label noise (2003.07422): SGD vs M3 vs RM3 vs RA3."""
