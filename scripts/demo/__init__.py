"""`make demo`: the whole pipeline in one command, its plan, its live view and its summary."""
