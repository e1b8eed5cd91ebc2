"""Rewards and graders. Kept light: importing ``rewards`` loads only the pure-string graders."""

from rewards.graders import EXTRACTORS, GRADERS, grade, grader_for_task

__all__ = ["EXTRACTORS", "GRADERS", "grade", "grader_for_task"]
