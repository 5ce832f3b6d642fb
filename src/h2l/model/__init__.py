"""Layer 2: teacher math (the numpy reference), the student and its fold, sizing (no torch), synthetic teachers,
query samplers."""
