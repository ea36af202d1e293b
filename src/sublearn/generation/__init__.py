"""Data generation: a teacher answers prompts through a backend, written resumably."""
