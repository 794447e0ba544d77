"""`python -m studio.backend.tasks` prints the README endpoint table from the task table."""

from . import readme_table

print(readme_table())
