"""Noisy labels: does robust aggregation block the memorization of corrupt labels?"""
