"""Victim multi-task networks, task losses and the MTL-UE generator."""
