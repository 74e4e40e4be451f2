"""Easy and hard examples (2003.07422): do easy examples generalize better among themselves?"""
