"""`python -m studio.backend.models` prints the README's capability matrix (task x family)."""

from .families import capability_matrix

print(capability_matrix())
